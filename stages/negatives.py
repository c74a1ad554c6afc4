"""negatives: evaluation candidate sets for valid and test -> data/negatives/<dataset>/."""
from __future__ import annotations

import logging
import pyarrow.parquet as pq

from pipeline import paths
from pipeline.artifacts import atomic_dir, write_json, write_parquet
from pipeline.cli import dataset_parser, run
from pipeline.data.negatives import NegativesConfig, make_all
from pipeline.config.params import get, load_params, section
from pipeline.data.split import SPLITS

log = logging.getLogger(__name__)


def config(params: dict) -> NegativesConfig:
    s = section(params, "negatives")
    g = lambda key, typ: get(s, key, typ, "negatives")  # noqa: E731
    return NegativesConfig(seed=g("seed", int), topk_negatives=g("topk_negatives", int),
                           ranking_negatives=g("ranking_negatives", int),
                           binary_negatives=g("binary_negatives", int),
                           popularity_alpha=g("popularity_alpha", (int, float)),
                           text_fraction=g("text_fraction", (int, float)), text_pool=g("text_pool", int),
                           text_backend=g("text_backend", str), text_anchor=g("text_anchor", str),
                           text_history=g("text_history", int))


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    cfg = config(load_params(args.params))
    splits = {s: pq.read_table(paths.split(args.dataset) / f"{s}.parquet", columns=["uid", "iid"])
              for s in SPLITS}
    titles = pq.read_table(paths.kcore(args.dataset) / "items.parquet", columns=["title"])["title"].to_pylist()
    tables, stats = make_all(splits, titles, cfg)
    with atomic_dir(paths.negatives(args.dataset)) as out:  # all files or none
        for name, table in tables.items():
            write_parquet(table, out / f"{name}.parquet")
    write_json({"dataset": args.dataset, "text_backend": cfg.text_backend, **stats},
               paths.metrics("negatives", args.dataset))
    log.info(f"[negatives] {args.dataset}: " + f"text anchor {stats['text_anchor']}, "
          + ", ".join(f"{k} {v['rows']:,}" for k, v in stats.items() if isinstance(v, dict)))


if __name__ == "__main__":
    run(main)
