"""One reader per raw format: raw files -> canonical (interactions, items) Arrow tables.

Interactions keep the raw file's row order: the split breaks timestamp ties by it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.data.readers import amazon, local, movielens

Reader = Callable[[Path], tuple[pa.Table, pa.Table]]

READERS: dict[str, Reader] = {
    "movielens-100k": movielens.read_official_100k,
    "movielens-1m": movielens.read_official_1m,
    "recbole-ml-100k": movielens.read_recbole_100k,
    "recbole-ml-1m": movielens.read_recbole_1m,
    "amazon-2014": amazon.read_amazon_2014,
    "local": local.read_local,
}


def read_raw(fmt: str, raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    if fmt not in READERS:
        raise PipelineError(f"{raw_dir}/checksums.json: unknown raw format '{fmt}'")
    return READERS[fmt](raw_dir)
