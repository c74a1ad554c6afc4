"""Canonical data contracts (DESIGN.md, "Data contracts") and their validation."""
from __future__ import annotations

import pyarrow as pa

from pipeline.errors import PipelineError

INTERACTIONS = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("rating", pa.float32()),
    ("timestamp", pa.int64()),
])

ITEMS = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("categories", pa.string()),  # "|"-joined, most general first
    ("description", pa.string()),
])

CATEGORY_SEP = "|"


def interactions_table(user_id, item_id, rating, timestamp) -> pa.Table:
    return pa.table([pa.array(user_id, pa.string()), pa.array(item_id, pa.string()),
                     pa.array(rating, pa.float32()), pa.array(timestamp, pa.int64())],
                    schema=INTERACTIONS)


def items_table(item_id, title, categories, description) -> pa.Table:
    return pa.table([pa.array(c, pa.string()) for c in (item_id, title, categories, description)],
                    schema=ITEMS)


def conform(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """Select and cast `table` to `schema`; name the file and column on any mismatch.

    Integer-valued columns may widen (int32 -> int64, int -> float32) but never lose
    information silently: a string where a number belongs is an error, not a parse.
    """
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise PipelineError(f"{source}: missing required column(s) {missing}; "
                            f"expected {[f.name for f in schema]}")
    cols = []
    for f in schema:
        col = table.column(f.name)
        if not _castable(col.type, f.type):
            raise PipelineError(f"{source}: column '{f.name}' has type {col.type}, expected {f.type}")
        col = col.cast(f.type)
        if col.null_count:
            if pa.types.is_string(f.type) and f.name not in ("user_id", "item_id"):
                col = col.fill_null("")  # text a source lacks is "", never null
            else:
                row = col.to_pylist().index(None)
                raise PipelineError(f"{source}: column '{f.name}' is null in data row {row + 1}")
        cols.append(col)
    return pa.table(cols, schema=schema)


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    if src == dst or pa.types.is_null(src):
        return True
    if pa.types.is_string(dst):
        return pa.types.is_string(src) or pa.types.is_large_string(src) or pa.types.is_integer(src)
    if pa.types.is_integer(dst):
        return pa.types.is_integer(src)
    if pa.types.is_floating(dst):
        return pa.types.is_integer(src) or pa.types.is_floating(src)
    return False
