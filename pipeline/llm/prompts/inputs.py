"""What the prompt builders read: the split, the evaluation sets and the item texts (`Inputs`,
`load_inputs`), checked so a missing file, column or item id is named, and turned into the
shapes the tasks use (per-user time-ordered sequences, per-iid title and description)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.llm.prompts.schema import EVAL_SETS, SPLITS


@dataclass
class Inputs:
    splits: dict[str, pa.Table]       # uid, iid[, rating, timestamp, raw_row]
    sets: dict[str, pa.Table]         # '<valid|test>_<topk|ranking|binary>'
    items: pa.Table                   # iid, title[, description]


def load_inputs(split_dir: Path, negatives_dir: Path, items_path: Path) -> Inputs:
    """Read the split, the evaluation sets and the item texts; a missing file is named."""
    def read(path: Path, stage: str, columns=None) -> pa.Table:
        if not path.exists():
            raise PipelineError(f"{path}: not found (run `dvc repro {stage}` first)")
        return pq.read_table(path, columns=columns)

    splits = {s: read(Path(split_dir) / f"{s}.parquet", "split") for s in SPLITS}
    sets = {f"{s}_{p}": read(Path(negatives_dir) / f"{s}_{p}.parquet", "negatives")
            for s in ("valid", "test") for p in EVAL_SETS}
    items = read(Path(items_path), "kcore")
    return Inputs(splits, sets, items)


def require(table: pa.Table, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise PipelineError(f"{what}: missing column(s) {', '.join(missing)}")


def require_columns(inputs: Inputs) -> None:
    """Every split and evaluation set has the columns the builders read."""
    for s in SPLITS:
        require(inputs.splits[s], ("uid", "iid"), f"split {s}.parquet")
    for name, t in inputs.sets.items():
        require(t, ("uid", "iid", "label") if name.endswith("binary")
                else ("uid", "pos_iid", "candidates", "label_index"), f"negatives {name}.parquet")


def max_used_iid(inputs: Inputs) -> int:
    """The largest iid the split or an evaluation set uses (-1 if none): items.parquet must cover it."""
    used = [inputs.splits[s]["iid"] for s in SPLITS]
    used += [pc.list_flatten(t["candidates"]) if "candidates" in t.column_names else t["iid"]
             for t in inputs.sets.values()]
    return max(_max_or(c, -1) for c in used)


def item_texts(items: pa.Table, used_max: int, where: str) -> tuple[list[str], list[str]]:
    """(title, description) per dense iid 0..n-1; every iid up to `used_max` must be present."""
    require(items, ("iid", "title"), where)
    iids = np.asarray(items["iid"].to_numpy(zero_copy_only=False), dtype=np.int64)
    if len(iids) and iids.min() < 0:
        raise PipelineError(f"{where}: negative iid {int(iids.min())}")
    n = max(int(iids.max()) + 1 if len(iids) else 0, used_max + 1)
    have = np.zeros(n, dtype=bool)
    have[iids] = True
    if not have.all():
        missing = np.flatnonzero(~have)
        raise PipelineError(f"{where}: no row for iid {int(missing[0])} used in the split "
                            f"({len(missing)} ids missing; kcore and split are out of step, re-run kcore)")
    titles = [""] * n
    descs = [""] * n
    desc_col = items["description"].to_pylist() if "description" in items.column_names else [""] * len(iids)
    for i, t, d in zip(iids.tolist(), items["title"].to_pylist(), desc_col):
        titles[i] = t or ""
        descs[i] = d or ""
    return titles, descs


def sequences(table: pa.Table) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per user: items and ratings in time order (timestamp, then raw-file row)."""
    uid = table["uid"].to_numpy().astype(np.int64)
    iid = table["iid"].to_numpy().astype(np.int64)
    rating = (table["rating"].to_numpy().astype(np.float64) if "rating" in table.column_names
              else np.full(len(uid), np.nan))
    keys = [uid]
    for c in ("timestamp", "raw_row"):
        if c in table.column_names:
            keys.insert(0, table[c].to_numpy())
    order = np.lexsort(keys) if len(keys) > 1 else np.argsort(uid, kind="stable")
    uid, iid, rating = uid[order], iid[order], rating[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]]) if len(uid) else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], len(uid)]
    items = {int(uid[s]): iid[s:e] for s, e in zip(starts, ends)}
    ratings = {int(uid[s]): rating[s:e] for s, e in zip(starts, ends)}
    return items, ratings


def _max_or(column, default: int) -> int:
    m = pc.max(column).as_py()
    return default if m is None else int(m)
