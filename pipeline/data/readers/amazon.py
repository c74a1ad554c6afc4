"""Amazon review data, 2014 release (McAuley et al.): 5-core reviews + product metadata.

Reviews are strict JSON lines. The metadata files of that release are Python literals
(single quotes, True/None), not JSON: they are parsed with ``ast.literal_eval``, which
accepts only literals and never executes code.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.data.readers.lines import finite_float, nonempty_id, parse_lines
from pipeline.data.schema import CATEGORY_SEP, interactions_table, items_table


def _one(raw_dir: Path, pattern: str) -> Path:
    found = sorted(raw_dir.glob(pattern))
    if len(found) != 1:
        raise PipelineError(f"{raw_dir}: expected exactly one file matching '{pattern}', found {len(found)}")
    return found[0]


def _review(line: str) -> tuple[str, str, float, int]:
    r = json.loads(line)
    return (nonempty_id(str(r["reviewerID"]), "reviewerID"), nonempty_id(str(r["asin"]), "asin"),
            finite_float(str(r["overall"])), int(r["unixReviewTime"]))


def _meta(line: str) -> dict:
    d = ast.literal_eval(line)
    if not isinstance(d, dict) or "asin" not in d:
        raise ValueError("not a dict with an 'asin'")
    return d


def _categories(paths) -> str:
    """[['Beauty', 'Skin Care'], ['Beauty', 'Makeup']] -> 'Beauty|Skin Care|Makeup'."""
    seen: dict[str, None] = {}
    for path in paths or []:
        for c in path:
            seen.setdefault(str(c).strip(), None)
    return CATEGORY_SEP.join(c for c in seen if c)


def _text(value) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def read_amazon_2014(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    rows = list(parse_lines(_one(raw_dir, "reviews_*_5.json.gz"), _review))
    reviewed = {asin for _, asin, _, _ in rows}
    meta: dict[str, tuple[str, str, str]] = {}
    for d in parse_lines(_one(raw_dir, "meta_*.json.gz"), _meta):
        asin = str(d["asin"])
        if asin in reviewed:
            meta[asin] = (_text(d.get("title")), _categories(d.get("categories")),
                          _text(d.get("description")))
    asins = sorted(reviewed)
    filled = [meta.get(a, ("", "", "")) for a in asins]
    items = items_table(asins, *zip(*filled)) if asins else items_table([], [], [], [])
    inter = interactions_table(*zip(*rows)) if rows else interactions_table([], [], [], [])
    return inter, items
