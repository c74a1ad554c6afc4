"""baselines: the domain models and the user-agnostic floors on every test user, as one table
-> data/reports/<dataset>/baselines.{md,json}.

Reads data/metrics/domain/<ds>/<model>.json for every domain.models entry (and
data/metrics/pretrain/<ds>/<model>.json for its training time) and
data/metrics/floors/<ds>/<floor>.json for each floor (pipeline.eval.floors.FLOORS); the top-level
blocks of those files are on every test user. Each cell carries its interval; retrieval is
shown with the known items masked and unmasked. A missing domain model is an error, a missing
floor a row marked missing."""
from __future__ import annotations

import logging
from pipeline import paths
from pipeline.artifacts import atomic_path, read_json, write_json
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.eval.floors import FLOORS
from pipeline.config.params import get, load_params, section
from pipeline.eval.report.baselines import markdown, table_rows
from pipeline.eval.report.inputs import read_metrics

log = logging.getLogger(__name__)


def collect_results(ds: str, models: list[str]) -> list[dict]:
    """The domain models' metrics files (old-schema files are an error that names the stage to
    re-run), then the floors'."""
    results = []
    for m in models:
        f = paths.metrics_domain(ds, m)
        if not f.exists():
            raise PipelineError(f"{f} missing: run pretrain_domain and evaluate_domain for '{m}' first")
        train = paths.metrics_pretrain(ds, m)
        results.append({**read_metrics(f, "domain"),
                        "train_seconds": read_json(train)["train_seconds"] if train.exists() else None})
    for name in FLOORS:
        f = paths.metrics_floors(ds, name)
        results.append(read_metrics(f, "floors") if f.exists() else
                       {"floor": name, "missing": f"{f.as_posix()} (`dvc repro evaluate_floors@{ds}`)"})
    return results


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    models = get(section(load_params(args.params), "domain"), "models", list, "domain")
    rows = table_rows(collect_results(args.dataset, models))
    out = paths.reports(args.dataset)
    text = markdown(rows, f"Domain baselines on {args.dataset} (test, every user)")
    write_json(rows, out / "baselines.json")
    with atomic_path(out / "baselines.md") as tmp:
        tmp.write_text(text)
    print(text)  # the table is the output (stdout); status lines are logged


if __name__ == "__main__":
    run(main)
