"""kcore: iterative k-core + dense ids -> data/kcore/<dataset>/ and its stats."""
from __future__ import annotations

import logging
from pipeline import paths
from pipeline.artifacts import atomic_dir, write_json, write_parquet
from pipeline.cli import dataset_parser, run
from pipeline.data.kcore import KCoreConfig, kcore
from pipeline.config.params import get, load_params, section

log = logging.getLogger(__name__)


def config(params: dict) -> KCoreConfig:
    s = section(params, "kcore")
    return KCoreConfig(user_k=get(s, "user_k", int, "kcore"), item_k=get(s, "item_k", int, "kcore"),
                       min_rating=get(s, "min_rating", (int, float, type(None)), "kcore"),
                       dedupe=get(s, "dedupe", str, "kcore"), seed=get(s, "seed", int, "kcore"))


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    cfg = config(load_params(args.params))
    src = paths.prepared(args.dataset)
    inter, users, items, stats = kcore(src / "interactions.parquet", src / "items.parquet", cfg)
    with atomic_dir(paths.kcore(args.dataset)) as out:  # all files or none
        write_parquet(inter, out / "interactions.parquet")
        write_parquet(users, out / "users.parquet")
        write_parquet(items, out / "items.parquet")
    write_json({"dataset": args.dataset, **stats}, paths.metrics("kcore", args.dataset))
    log.info(f"[kcore] {args.dataset}: {stats['users']:,} users, {stats['items']:,} items, "
          f"{stats['interactions']:,} interactions, sparsity {stats['sparsity']:.4f}")


if __name__ == "__main__":
    run(main)
