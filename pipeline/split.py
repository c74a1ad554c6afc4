"""Leave-one-out by time: per user, last interaction -> test, second to last -> valid.

Order within a user is (timestamp, raw_row): ties in time are broken by the position in the
raw file, never by item id (sorting ties by id leaks, see the P5/LRURec issues). Users with
fewer than `min_interactions` (at least 3: one each for train, valid, test) keep all their
interactions in train and are counted as `train_only_users`; they get no valid/test row.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.errors import PipelineError

SPLITS = ("train", "valid", "test")


def split(interactions: Path, min_interactions: int = 3, threads: int = 2) -> tuple[dict[str, pa.Table], dict]:
    if min_interactions < 3:
        raise PipelineError(f"params.yaml: split.min_interactions must be >= 3, got {min_interactions}")
    con = duckdb.connect()
    con.execute(f"SET threads={int(threads)}")
    con.execute(f"""
        CREATE TEMP TABLE s AS
        SELECT uid, iid, rating, timestamp, raw_row,
               CASE WHEN n < {int(min_interactions)} THEN 'train'
                    WHEN rk = 1 THEN 'test' WHEN rk = 2 THEN 'valid' ELSE 'train' END AS part
        FROM (SELECT *, row_number() OVER (PARTITION BY uid ORDER BY timestamp DESC, raw_row DESC) AS rk,
                     count(*) OVER (PARTITION BY uid) AS n
              FROM read_parquet(?))""", [str(interactions)])
    out = {name: con.sql("SELECT uid, iid, rating, timestamp, raw_row FROM s WHERE part = ? "
                         "ORDER BY uid, timestamp, raw_row", params=[name]).to_arrow_table()
           for name in SPLITS}
    train_only = con.sql(f"""SELECT count(*) FROM (SELECT uid FROM s GROUP BY uid
                            HAVING count(*) < {int(min_interactions)})""").fetchone()[0]
    stats = {name: {"interactions": t.num_rows} for name, t in out.items()}
    stats["evaluated_users"] = out["test"].num_rows
    stats["train_only_users"] = train_only
    stats["min_interactions"] = min_interactions
    return {k: _schema(v) for k, v in out.items()}, stats


def _schema(t: pa.Table) -> pa.Table:
    return t.cast(pa.schema([("uid", pa.int32()), ("iid", pa.int32()), ("rating", pa.float32()),
                             ("timestamp", pa.int64()), ("raw_row", pa.int64())]))
