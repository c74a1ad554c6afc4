"""A user's own data: interactions and items files (CSV or Parquet) in the canonical schema."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.data.schema import INTERACTIONS, ITEMS, conform

OPTIONAL_TEXT = ("categories", "description")


def _find(raw_dir: Path, stem: str) -> Path:
    found = [raw_dir / f"{stem}{ext}" for ext in (".parquet", ".csv") if (raw_dir / f"{stem}{ext}").exists()]
    if len(found) != 1:
        raise PipelineError(f"{raw_dir}: expected one of {stem}.parquet or {stem}.csv, found {len(found)}")
    return found[0]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) in (b"\n", b"\r")


def _read_csv(path: Path) -> pa.Table:
    """A CSV with every row checked: a row with the wrong number of fields is an error naming
    its line (a cut last line -- an interrupted copy -- is the usual cause, and is said so)."""
    bad: list = []

    def invalid(row) -> str:
        bad.append(row)
        return "error"

    # ids stay strings even when they look like numbers; only an empty field is null, so 'nan'
    # reads as NaN (refused with its value by conform) and 'NA' makes a number column a string
    convert = pacsv.ConvertOptions(column_types={"user_id": pa.string(), "item_id": pa.string()},
                                   null_values=[""], strings_can_be_null=False)
    # single-threaded: only then does pyarrow give an invalid row its line number
    read = pacsv.ReadOptions(use_threads=False)
    try:
        return pacsv.read_csv(path, read_options=read, convert_options=convert,
                              parse_options=pacsv.ParseOptions(invalid_row_handler=invalid))
    except pa.ArrowInvalid as e:
        if not bad:
            raise
        row = bad[0]
        line = f"line {row.number}" if row.number is not None else "a line"
        hint = ""
        if not _ends_with_newline(path):
            last = path.read_bytes().rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
            if row.text == last:
                hint = "; it is the last line and the file does not end with a newline: a truncated copy?"
        raise PipelineError(f"{path}: {line} has {row.actual_columns} field(s), the header has "
                            f"{row.expected_columns}: {row.text[:200]!r}{hint}") from e


def read_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return _read_csv(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise PipelineError(f"{path}: cannot read ({e})") from e


def read_local(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    inter_path, items_path = _find(raw_dir, "interactions"), _find(raw_dir, "items")
    inter = conform(read_table(inter_path), INTERACTIONS, str(inter_path), _header(inter_path))
    items = read_table(items_path)
    for name in OPTIONAL_TEXT:
        if name not in items.column_names:
            items = items.append_column(name, pa.array([""] * items.num_rows, pa.string()))
    return inter, conform(items, ITEMS, str(items_path), _header(items_path))


def _header(path: Path) -> int | None:
    """Lines before the first data row, so a CSV's errors also name the file line."""
    return 1 if path.suffix == ".csv" else None
