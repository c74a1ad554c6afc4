"""Canonical data contracts (docs/design.md, "Data contracts") and their validation."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

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


ID_COLUMNS = ("user_id", "item_id")


def conform(table: pa.Table, schema: pa.Schema, source: str, header_lines: int | None = None) -> pa.Table:
    """Select and cast `table` to `schema`; name the file, column, 1-based data row, value and
    reason on any mismatch (`header_lines`: for a text file, rows are also given as file lines).

    Integer-valued columns may widen (int32 -> int64, int -> float32) but never lose
    information silently: a string where a number belongs is an error, not a parse. Ids must
    be non-empty (a CSV's empty field reads as "", which would become a user or item ""), and
    numbers finite (a NaN rating trains a model to NaN without an error).
    """
    def where(row: int) -> str:
        line = f" (line {row + 1 + header_lines})" if header_lines is not None else ""
        return f"data row {row + 1}{line}"

    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise PipelineError(f"{source}: missing required column(s) {missing}; "
                            f"expected {[f.name for f in schema]}")
    cols = []
    for f in schema:
        col = table.column(f.name)
        if not _castable(col.type, f.type):
            row, value = _first_uncastable(col, f.type)
            at = f": {where(row)} has {value!r}" if row is not None else ""
            raise PipelineError(f"{source}: column '{f.name}' has type {col.type}, expected {f.type}{at}")
        col = col.cast(f.type)
        if col.null_count:
            if pa.types.is_string(f.type) and f.name not in ID_COLUMNS:
                col = col.fill_null("")  # text a source lacks is "", never null
            else:
                row = col.to_pylist().index(None)
                raise PipelineError(f"{source}: column '{f.name}' is null in {where(row)}")
        if f.name in ID_COLUMNS:
            blank = pc.equal(pc.utf8_trim_whitespace(col), "")
            if pc.any(blank).as_py():
                row = pc.index(blank, True).as_py()
                raise PipelineError(f"{source}: column '{f.name}' is empty in {where(row)} "
                                    f"(value {col[row].as_py()!r}); every row needs a user and an item id")
        if pa.types.is_floating(f.type):
            finite = pc.is_finite(col)
            if not pc.all(finite).as_py():
                row = pc.index(finite, False).as_py()
                raise PipelineError(f"{source}: column '{f.name}' is not finite in {where(row)} "
                                    f"(value {col[row].as_py()!r}); NaN and infinite values are refused")
        cols.append(col)
    return pa.table(cols, schema=schema)


def _first_uncastable(col: pa.ChunkedArray, dst: pa.DataType) -> tuple[int | None, object]:
    """The first row whose value does not convert to `dst` (the error path only: per value)."""
    for i, v in enumerate(col.to_pylist()):
        if v is None:
            continue
        try:
            pa.scalar(v).cast(dst)  # strings as numbers: '5' casts, '2020-01-01' does not
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return i, v
    return None, None  # every value converts: the column's declared type is what is wrong


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
