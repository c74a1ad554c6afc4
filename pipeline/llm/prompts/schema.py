"""The vocabulary every prompt module shares: splits, renders, task names and families, the
columns of a prompt table (SCHEMA) and of items.parquet (ITEMS_SCHEMA), and `Spec`, one sample
before rendering."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

SPLITS = ("train", "valid", "test")
RENDERS = ("tokens", "text")
REC_TASKS = ("interaction", "topk", "retrieval", "ranking", "rating")
AUX_TASKS = ("mim", "bpr", "mlm")
TASKS = REC_TASKS + AUX_TASKS
FAMILY = {**{t: "rec" for t in REC_TASKS}, **{t: "aux" for t in AUX_TASKS}}
MASK = "[MASK]"
EVAL_SETS = ("topk", "ranking", "binary")

SCHEMA = pa.schema([
    ("task", pa.string()), ("family", pa.string()), ("prompt", pa.string()), ("answer", pa.string()),
    ("uid", pa.int32()), ("iid", pa.int32()), ("candidates", pa.list_(pa.int32())),
    ("label_index", pa.int32()), ("label", pa.int8()), ("rating", pa.float32()),
    ("pair_prefix", pa.string()),
])
# The text each item is named by in a pair prompt (items.parquet beside the prompt tables).
ITEMS_SCHEMA = pa.schema([("iid", pa.int32()), ("pair_suffix", pa.string())])


@dataclass
class Spec:
    """One sample, render-independent."""
    task: str
    uid: int = -1
    iid: int = -1
    history: list[int] = field(default_factory=list)  # oldest first, already cut to history_len
    candidates: list[int] = field(default_factory=list)
    label_index: int = -1
    label: int = -1
    rating: float = float("nan")
    mask_pos: int = -1      # MIM: position in `history` shown as [MASK]
    show_candidates: bool = False
    text: str = ""          # MLM: the masked item text
    answer: str = ""        # MLM answer (the masked words); others are derived at render time
