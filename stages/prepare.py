"""prepare: raw files -> canonical data/prepared/<dataset>/{interactions,items}.parquet."""
from __future__ import annotations

import logging
from pipeline import paths
from pipeline.artifacts import atomic_dir, read_json, write_json, write_parquet
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.config.params import load_params
from pipeline.data.prepare import prepare

log = logging.getLogger(__name__)


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    load_params(args.params)  # prepare has no params; fail early if run outside the repo
    raw = paths.raw(args.dataset)
    if not (raw / "checksums.json").exists():
        raise PipelineError(f"{raw}/checksums.json missing: run the download stage first")
    inter, items, report = prepare(raw, read_json(raw / "checksums.json"))
    with atomic_dir(paths.prepared(args.dataset)) as out:  # all files or none
        write_parquet(inter, out / "interactions.parquet")
        write_parquet(items, out / "items.parquet")
    write_json(report, paths.metrics("prepare", args.dataset))
    log.info(f"[prepare] {args.dataset}: {report['interactions']:,} interactions, {report['users']:,} users, "
          f"{report['items']:,} items (route {report['route']})")


if __name__ == "__main__":
    run(main)
