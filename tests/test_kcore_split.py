from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import PipelineError
from pipeline.data.kcore import KCoreConfig, kcore
from pipeline.data.split import split


def _write(tmp_path, rows, items=None):
    users, its, ratings, ts = zip(*rows)
    pq.write_table(pa.table({"user_id": list(users), "item_id": list(its),
                             "rating": pa.array(ratings, pa.float32()), "timestamp": pa.array(ts, pa.int64())}),
                   tmp_path / "inter.parquet")
    ids = sorted(set(its)) if items is None else items
    pq.write_table(pa.table({"item_id": ids, "title": [f"t {i}" for i in ids], "categories": [""] * len(ids),
                             "description": [""] * len(ids)}), tmp_path / "items.parquet")
    return tmp_path / "inter.parquet", tmp_path / "items.parquet"


def _brute_kcore(pairs: set, uk: int, ik: int) -> set:
    while True:
        uc, ic = {}, {}
        for u, i in pairs:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        keep = {(u, i) for u, i in pairs if uc[u] >= uk and ic[i] >= ik}
        if keep == pairs:
            return pairs
        pairs = keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcore_is_the_fixed_point(tmp_path, seed):
    rng = np.random.default_rng(seed)
    pairs = {(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 60, 900), rng.zipf(1.5, 900) % 80)}
    rows = [(u, i, 1.0, t) for t, (u, i) in enumerate(sorted(pairs))]
    inter, users, items, stats = kcore(*_write(tmp_path, rows), KCoreConfig(user_k=4, item_k=6, seed=3))
    uid = dict(zip(users["uid"].to_pylist(), users["user_id"].to_pylist()))
    iid = dict(zip(items["iid"].to_pylist(), items["item_id"].to_pylist()))
    got = {(uid[u], iid[i]) for u, i in zip(inter["uid"].to_pylist(), inter["iid"].to_pylist())}
    assert got == _brute_kcore(pairs, 4, 6)
    assert stats["interactions"] == len(got)
    assert sorted(uid) == list(range(len(uid))) and sorted(iid) == list(range(len(iid)))


def test_dense_ids_are_seeded_not_first_appearance(tmp_path):
    rows = [(f"u{u:02d}", f"i{i:02d}", 1.0, u * 100 + i) for u in range(30) for i in range(30)]
    src = _write(tmp_path, rows)
    _, users_a, _, _ = kcore(*src, KCoreConfig(user_k=1, item_k=1, seed=5))
    _, users_b, _, _ = kcore(*src, KCoreConfig(user_k=1, item_k=1, seed=5))
    _, users_c, _, _ = kcore(*src, KCoreConfig(user_k=1, item_k=1, seed=6))
    assert users_a.equals(users_b)
    assert not users_a.equals(users_c)
    # first appearance would give u00 -> 0, u01 -> 1, ...
    assert users_a["user_id"].to_pylist() != sorted(users_a["user_id"].to_pylist())


def test_dedupe_and_rating_threshold(tmp_path):
    rows = [("a", "x", 5.0, 10), ("a", "x", 2.0, 30), ("a", "y", 4.0, 20), ("b", "x", 1.0, 5), ("b", "y", 5.0, 6)]
    src = _write(tmp_path, rows)
    inter, *_ , stats = kcore(*src, KCoreConfig(user_k=1, item_k=1, dedupe="last"))
    assert stats["duplicates_dropped"] == 1 and inter.num_rows == 4
    assert sorted(inter["timestamp"].to_pylist()) == [5, 6, 20, 30]  # kept the later (a, x)
    inter, *_ , stats = kcore(*src, KCoreConfig(user_k=1, item_k=1, dedupe="first", min_rating=4))
    assert stats["after_rating_filter"] == 3 and sorted(inter["timestamp"].to_pylist()) == [6, 10, 20]


def test_empty_kcore_names_thresholds(tmp_path):
    src = _write(tmp_path, [("a", "x", 1.0, 1), ("b", "y", 1.0, 2)])
    with pytest.raises(PipelineError, match=r"k-core left no interactions \(user_k=5, item_k=5"):
        kcore(*src, KCoreConfig())


def test_split_tie_break_by_raw_order_not_item_id(tmp_path):
    # user a: three items at the same time; raw order z, b, m -> test is m, valid is b
    rows = [("a", "z", 1.0, 100), ("a", "b", 1.0, 100), ("a", "m", 1.0, 100), ("a", "c", 1.0, 50),
            ("b", "z", 1.0, 1), ("b", "b", 1.0, 2), ("b", "m", 1.0, 3), ("c", "q", 1.0, 1)]
    src = _write(tmp_path, rows)
    inter, users, items, _ = kcore(*src, KCoreConfig(user_k=1, item_k=1))
    pq.write_table(inter, tmp_path / "k.parquet")
    parts, stats = split(tmp_path / "k.parquet")
    name = dict(zip(items["iid"].to_pylist(), items["item_id"].to_pylist()))
    user = dict(zip(users["uid"].to_pylist(), users["user_id"].to_pylist()))
    by = lambda part: {user[u]: name[i] for u, i in zip(parts[part]["uid"].to_pylist(), parts[part]["iid"].to_pylist())}  # noqa: E731
    assert by("test")["a"] == "m" and by("valid")["a"] == "b"
    assert by("test")["b"] == "m" and by("valid")["b"] == "b"
    assert "c" not in by("test") and stats["train_only_users"] == 1  # one interaction: train only
    assert stats["evaluated_users"] == 2


def test_split_never_leaks_held_out_items(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(50)}", f"i{rng.integers(40)}", 1.0, int(rng.integers(0, 20))) for _ in range(2000)]
    src = _write(tmp_path, rows)
    inter, *_ = kcore(*src, KCoreConfig(user_k=3, item_k=3))
    pq.write_table(inter, tmp_path / "k.parquet")
    parts, _ = split(tmp_path / "k.parquet")
    train = set(zip(parts["train"]["uid"].to_pylist(), parts["train"]["iid"].to_pylist()))
    for held in ("valid", "test"):
        pairs = list(zip(parts[held]["uid"].to_pylist(), parts[held]["iid"].to_pylist()))
        assert pairs and not (set(pairs) & train)
        assert len({u for u, _ in pairs}) == len(pairs)  # one per user
    # held-out interactions are the latest of each user
    last_train = {}
    for u, t in zip(parts["train"]["uid"].to_pylist(), parts["train"]["timestamp"].to_pylist()):
        last_train[u] = max(t, last_train.get(u, t))
    for u, t in zip(parts["valid"]["uid"].to_pylist(), parts["valid"]["timestamp"].to_pylist()):
        assert t >= last_train[u]
