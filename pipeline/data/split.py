"""Leave-one-out by time: per user, last interaction -> test, second to last -> valid.

Order within a user is (timestamp, raw_row): ties in time are broken by the position in the
raw file, never by item id (sorting ties by id leaks, see the P5/LRURec issues). Users with
fewer than `min_interactions` (at least 3: one each for train, valid, test) keep all their
interactions in train and are counted as `train_only_users`; they get no valid/test row.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError

SPLITS = ("train", "valid", "test")
COLUMNS = ("uid", "iid", "rating", "timestamp", "raw_row")


def split(interactions: Path, min_interactions: int = 3) -> tuple[dict[str, pa.Table], dict]:
    if min_interactions < 3:
        raise PipelineError(f"params.yaml: split.min_interactions must be >= 3, got {min_interactions}")
    table = pq.read_table(interactions, columns=list(COLUMNS))
    uid, ts, raw = (table[c].to_numpy() for c in ("uid", "timestamp", "raw_row"))
    order = np.lexsort((raw, ts, uid))  # by user, then time, then raw-file position
    table = table.take(order)
    uid = uid[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    ends = np.r_[starts[1:], len(uid)]
    evaluated = (ends - starts) >= min_interactions
    test_rows, valid_rows = ends[evaluated] - 1, ends[evaluated] - 2
    part = np.zeros(len(uid), dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[valid_rows], part[test_rows] = 1, 2
    out = {name: table.filter(pa.array(part == k)) for k, name in enumerate(SPLITS)}
    stats = {name: {"interactions": t.num_rows} for name, t in out.items()}
    stats.update(evaluated_users=int(evaluated.sum()), train_only_users=int((~evaluated).sum()),
                 min_interactions=min_interactions)
    return out, stats
