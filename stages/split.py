"""split: leave-one-out by time -> data/split/<dataset>/{train,valid,test}.parquet."""
from __future__ import annotations

import logging
from pipeline import paths
from pipeline.artifacts import atomic_dir, write_json, write_parquet
from pipeline.cli import dataset_parser, run
from pipeline.config.params import get, load_params, section
from pipeline.data.split import split

log = logging.getLogger(__name__)


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    s = section(load_params(args.params), "split")
    parts, stats = split(paths.kcore(args.dataset) / "interactions.parquet",
                         min_interactions=get(s, "min_interactions", int, "split"))
    with atomic_dir(paths.split(args.dataset)) as out:  # all files or none
        for name, table in parts.items():
            write_parquet(table, out / f"{name}.parquet")
    write_json({"dataset": args.dataset, **stats}, paths.metrics("split", args.dataset))
    log.info(f"[split] {args.dataset}: " + ", ".join(f"{k} {v['interactions']:,}" for k, v in stats.items()
                                                  if isinstance(v, dict)))


if __name__ == "__main__":
    run(main)
