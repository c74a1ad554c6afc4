"""baselines: the domain models' test metrics as one table -> data/reports/<dataset>/baselines.{md,json}."""
from __future__ import annotations

from pipeline import paths
from pipeline.artifacts import atomic_path, read_json, write_json
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.params import get, load_params, section
from pipeline.report import markdown, table_rows


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    models = get(section(load_params(args.params), "domain"), "models", list, "domain")
    results = []
    for m in models:
        f = paths.metrics_domain(args.dataset, m)
        if not f.exists():
            raise PipelineError(f"{f} missing: run pretrain_domain for '{m}' first")
        train = paths.metrics_pretrain(args.dataset, m)
        results.append({**read_json(f), "train_seconds": read_json(train)["train_seconds"] if train.exists() else None})
    rows = table_rows(results)
    out = paths.DATA / "reports" / args.dataset
    write_json(rows, out / "baselines.json")
    with atomic_path(out / "baselines.md") as tmp:
        tmp.write_text(markdown(rows, f"Domain baselines on {args.dataset} (test)"))
    print(markdown(rows, f"Domain baselines on {args.dataset} (test)"))


if __name__ == "__main__":
    run(main)
