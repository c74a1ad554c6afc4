"""A user's own data: interactions and items files (CSV or Parquet) in the canonical schema."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.schema import INTERACTIONS, ITEMS, conform

OPTIONAL_TEXT = ("categories", "description")


def _find(raw_dir: Path, stem: str) -> Path:
    found = [raw_dir / f"{stem}{ext}" for ext in (".parquet", ".csv") if (raw_dir / f"{stem}{ext}").exists()]
    if len(found) != 1:
        raise PipelineError(f"{raw_dir}: expected one of {stem}.parquet or {stem}.csv, found {len(found)}")
    return found[0]


def read_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        # ids stay strings even when they look like numbers
        opts = pacsv.ConvertOptions(column_types={"user_id": pa.string(), "item_id": pa.string()})
        return pacsv.read_csv(path, convert_options=opts)
    except (pa.ArrowInvalid, OSError) as e:
        raise PipelineError(f"{path}: cannot read ({e})") from e


def read_local(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    inter_path, items_path = _find(raw_dir, "interactions"), _find(raw_dir, "items")
    inter = conform(read_table(inter_path), INTERACTIONS, str(inter_path))
    items = read_table(items_path)
    for name in OPTIONAL_TEXT:
        if name not in items.column_names:
            items = items.append_column(name, pa.array([""] * items.num_rows, pa.string()))
    return inter, conform(items, ITEMS, str(items_path))
