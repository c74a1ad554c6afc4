"""Iterative k-core in DuckDB, then dense ids from a seeded permutation.

Policy, in order:
1. optional rating threshold: keep interactions with rating >= min_rating;
2. dedupe: one interaction per (user, item); `dedupe: last` keeps the latest (by timestamp,
   then raw-file order), `first` the earliest. Repeats are dropped, not counted twice, so
   a held-out item can never also sit in the same user's training history;
3. k-core: drop users with < user_k and items with < item_k interactions, repeated to a
   fixed point (the unique maximal subgraph meeting both thresholds);
4. dense ids: users (and items) sorted by raw id, then numbered by a permutation drawn from
   `seed`. Numbering by first appearance would leak time order into the ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class KCoreConfig:
    user_k: int = 5
    item_k: int = 5
    min_rating: float | None = None
    dedupe: str = "last"
    seed: int = 0
    threads: int = 2
    memory_limit: str = "8GB"

    def __post_init__(self):
        if self.user_k < 1 or self.item_k < 1:
            raise PipelineError(f"params.yaml: kcore.user_k and kcore.item_k must be >= 1, "
                                f"got {self.user_k}, {self.item_k}")
        if self.dedupe not in ("last", "first"):
            raise PipelineError(f"params.yaml: kcore.dedupe must be 'last' or 'first', got {self.dedupe!r}")


def connect(cfg: KCoreConfig) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET threads={int(cfg.threads)}; SET memory_limit='{cfg.memory_limit}'; "
                "SET preserve_insertion_order=false")
    return con


def kcore(interactions: Path, items: Path, cfg: KCoreConfig) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """-> (interactions[uid, iid, rating, timestamp, raw_row], users map, items map, stats)."""
    con = connect(cfg)
    con.execute("CREATE TEMP TABLE raw AS SELECT user_id, item_id, rating, timestamp, "
                "file_row_number AS raw_row FROM read_parquet(?, file_row_number=true)",
                [str(interactions)])
    n_raw = _scalar(con, "SELECT count(*) FROM raw")
    where = "" if cfg.min_rating is None else f"WHERE rating >= {float(cfg.min_rating)}"
    order = "DESC" if cfg.dedupe == "last" else "ASC"
    con.execute(f"""
        CREATE TEMP TABLE t AS SELECT * FROM raw {where}
        QUALIFY row_number() OVER (PARTITION BY user_id, item_id
                                   ORDER BY timestamp {order}, raw_row {order}) = 1""")
    n_rated = n_raw if cfg.min_rating is None else _scalar(con, f"SELECT count(*) FROM raw {where}")
    con.execute("DROP TABLE raw")
    n = n_dedup = _scalar(con, "SELECT count(*) FROM t")
    iterations = 0
    while True:
        iterations += 1
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE t AS SELECT * FROM t
            WHERE user_id IN (SELECT user_id FROM t GROUP BY user_id HAVING count(*) >= {int(cfg.user_k)})
              AND item_id IN (SELECT item_id FROM t GROUP BY item_id HAVING count(*) >= {int(cfg.item_k)})""")
        m = _scalar(con, "SELECT count(*) FROM t")
        if m == n:
            break
        n = m
    if n == 0:
        thr = f"user_k={cfg.user_k}, item_k={cfg.item_k}, min_rating={cfg.min_rating}"
        raise PipelineError(f"{interactions}: k-core left no interactions ({thr}); lower the thresholds "
                            "in params.yaml (kcore)")

    rng = np.random.default_rng(cfg.seed)
    users = _dense_ids(con, "user_id", "uid", rng)
    items_map = _dense_ids(con, "item_id", "iid", rng)
    con.register("umap", users)
    con.register("imap", items_map)
    out = con.sql("""
        SELECT u.uid, i.iid, t.rating, t.timestamp, t.raw_row FROM t
        JOIN umap u USING (user_id) JOIN imap i USING (item_id)
        ORDER BY u.uid, t.timestamp, t.raw_row""").to_arrow_table()
    item_text = con.sql("""
        SELECT m.iid, m.item_id, it.title, it.categories, it.description
        FROM imap m JOIN read_parquet(?) it USING (item_id) ORDER BY m.iid""", params=[str(items)]).to_arrow_table()
    if item_text.num_rows != items_map.num_rows:
        raise PipelineError(f"{items}: {items_map.num_rows - item_text.num_rows} kept items have no row")
    n_users, n_items = users.num_rows, items_map.num_rows
    stats = {"users": n_users, "items": n_items, "interactions": n,
             "sparsity": 1.0 - n / (n_users * n_items),
             "raw_interactions": n_raw, "after_rating_filter": n_rated,
             "duplicates_dropped": n_rated - n_dedup, "kcore_iterations": iterations,
             "user_k": cfg.user_k, "item_k": cfg.item_k, "min_rating": cfg.min_rating,
             "dedupe": cfg.dedupe, "seed": cfg.seed}
    return _cast(out), users.select(["uid", "user_id"]), item_text, stats


def _scalar(con: duckdb.DuckDBPyConnection, query: str):
    return con.sql(query).fetchone()[0]


def _dense_ids(con, col: str, new: str, rng: np.random.Generator) -> pa.Table:
    ids = con.sql(f"SELECT DISTINCT {col} FROM t ORDER BY {col}").to_arrow_table().column(0)
    perm = rng.permutation(len(ids)).astype(np.int32)
    table = pa.table({col: ids, new: perm})
    return table.sort_by(new).select([new, col])


def _cast(t: pa.Table) -> pa.Table:
    return t.cast(pa.schema([("uid", pa.int32()), ("iid", pa.int32()), ("rating", pa.float32()),
                             ("timestamp", pa.int64()), ("raw_row", pa.int64())]))
