from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.errors import PipelineError
from pipeline.data.negatives import Forbidden, NegativesConfig, draw_negatives, make_all, popularity_weights
from pipeline.data.textsim import tfidf_vectors, topk_neighbors
from tests.helpers import random_log


def _seen(splits):
    return {(u, i) for t in splits.values() for u, i in zip(t["uid"].to_pylist(), t["iid"].to_pylist())}


@pytest.mark.parametrize("text_fraction", [0.0, 0.5, 1.0])
def test_candidate_sets_are_leak_free(text_fraction):
    n_items = 160
    splits = random_log(40, n_items, (5, 30), seed=1)
    titles = [f"word{i % 13} thing{i % 7} x{i}" for i in range(n_items)]
    cfg = NegativesConfig(seed=3, text_fraction=text_fraction, text_pool=20)
    tables, stats = make_all(splits, titles, cfg)
    seen = _seen(splits)
    for name in ("valid", "test"):
        pos = dict(zip(splits[name]["uid"].to_pylist(), splits[name]["iid"].to_pylist()))
        for protocol, m in (("topk", 19), ("ranking", 99)):
            t = tables[f"{name}_{protocol}"]
            assert t.num_rows == len(pos)
            for row in t.to_pylist():
                cands = row["candidates"]
                assert len(cands) == m + 1 and len(set(cands)) == m + 1
                assert cands[row["label_index"]] == pos[row["uid"]] == row["pos_iid"]
                assert [c for c in cands if (row["uid"], c) in seen] == [row["pos_iid"]]  # exactly one positive
        b = tables[f"{name}_binary"].to_pylist()
        assert len(b) == 2 * len(pos)
        for r in b:
            assert ((r["uid"], r["iid"]) in seen) == (r["label"] == 1)
            if r["label"] == 1:
                assert r["iid"] == pos[r["uid"]]


def test_sets_are_seeded_and_shuffled():
    splits = random_log(30, 200, (5, 15), seed=2)
    titles = [f"t{i % 17} u{i % 5}" for i in range(200)]
    a, _ = make_all(splits, titles, NegativesConfig(seed=1))
    b, _ = make_all(splits, titles, NegativesConfig(seed=1))
    c, _ = make_all(splits, titles, NegativesConfig(seed=2))
    assert all(a[k].equals(b[k]) for k in a)
    assert not a["test_topk"].equals(c["test_topk"])
    positions = a["test_ranking"]["label_index"].to_pylist()
    assert len(set(positions)) > 10  # the positive is not always in the same slot


def test_text_negatives_come_from_similar_titles():
    n_items = 300
    splits = random_log(50, n_items, (4, 8), seed=4)
    titles = [f"family{i // 10} common" for i in range(n_items)]  # 30 families of 10 similar titles
    cfg = NegativesConfig(seed=0, text_fraction=1.0, text_pool=9, topk_negatives=5, text_anchor="positive")
    tables, stats = make_all(splits, titles, cfg)
    for row in tables["test_topk"].to_pylist():
        fam = row["pos_iid"] // 10
        text_negs = [c for c in row["candidates"] if c != row["pos_iid"] and c // 10 == fam]
        assert len(text_negs) == row["n_text_negatives"]
    assert stats["test_topk"]["mean_text_negatives"] > 3  # most of the 5 slots came from the family


def test_popularity_alpha_shapes_the_draw():
    n_items = 500
    train_iids = np.repeat(np.arange(10), 1000)  # items 0-9 are very popular
    forbidden = Forbidden(np.array([0]), np.array([499]), n_items)
    rng = np.random.default_rng(0)
    uids = np.zeros(2000, dtype=np.int64)
    hot = lambda alpha: (draw_negatives(rng, uids, 5, forbidden, popularity_weights(train_iids, n_items, alpha),  # noqa: E731
                                        None, 0)[0] < 10).mean()
    assert hot(1.0) > 0.5 > 0.1 > hot(0.0)


def test_nearly_full_user_falls_back_to_exact_draw():
    n_items = 30
    uids = np.array([0])
    forbidden = Forbidden(np.zeros(10, dtype=np.int64), np.arange(10), n_items)
    negs, _ = draw_negatives(np.random.default_rng(0), uids, 20, forbidden,
                             popularity_weights(np.arange(10), n_items, 1.0), None, 0, max_rounds=1)
    assert sorted(negs[0].tolist()) == list(range(10, 30))


def test_too_few_items_is_a_clear_error():
    forbidden = Forbidden(np.zeros(25, dtype=np.int64), np.arange(25), 30)
    with pytest.raises(PipelineError, match="uid=0 interacted with all but 5 items; cannot draw 19"):
        draw_negatives(np.random.default_rng(0), np.array([0]), 19, forbidden,
                       popularity_weights(np.arange(3), 30, 1.0), None, 0)


def test_bad_params_are_named():
    with pytest.raises(PipelineError, match="negatives.text_fraction"):
        NegativesConfig(text_fraction=1.5)
    with pytest.raises(PipelineError, match="negatives.text_backend"):
        NegativesConfig(text_backend="bm25")


def _brute_topk(x: np.ndarray, queries, k):
    sims = x[queries] @ x.T
    out = np.full((len(queries), k), -1)
    for r, q in enumerate(queries):
        cand = [(-sims[r, j], j) for j in range(x.shape[0]) if j != q and sims[r, j] > 0]
        for c, (_, j) in enumerate(sorted(cand)[:k]):
            out[r, c] = j
    return out


def test_sparse_topk_matches_brute_force():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    titles = [" ".join(rng.choice(words, rng.integers(1, 5))) for _ in range(150)] + ["", "the and of"]
    x = tfidf_vectors(titles)
    queries = np.arange(0, 152, 3)
    got = topk_neighbors(x, queries, 7, block_nnz=500)  # tiny blocks: exercises the blocking
    want = _brute_topk(x.toarray().astype(np.float64), queries, 7)
    # equal up to ties in similarity: compare the similarity profile, then the sets where no tie
    dense = x.toarray()
    for r, q in enumerate(queries):
        g = [dense[q] @ dense[j] if j >= 0 else 0 for j in got[r]]
        w = [dense[q] @ dense[j] if j >= 0 else 0 for j in want[r]]
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert (got[-1] == -1).all()  # the stop-word-only title has no neighbours


def test_dense_topk_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = np.arange(80)
    got = topk_neighbors(x, queries, 5, block_nnz=200)
    want = _brute_topk(x.astype(np.float64), queries, 5)
    np.testing.assert_array_equal(got, want)


def test_topk_never_returns_self():
    x = sp.csr_matrix(np.ones((5, 3), dtype=np.float32) / np.sqrt(3))
    got = topk_neighbors(x, np.arange(5), 10)
    for q in range(5):
        assert q not in got[q] and sorted(got[q][got[q] >= 0]) == [j for j in range(5) if j != q]


def _hub_catalogue(n_users=300, n_items=800, window=5, seed=0):
    """A chain of titles: item i is the words w_i .. w_{i+window-1}, so its nearest titles are
    its neighbours on the chain, which share words with it but fewer with each other. Users
    hold random items. Positive-anchored text negatives are then the positive's chain
    neighbours and the positive is the one candidate similar to all of them (the hub)."""
    titles = [" ".join(f"w{j}" for j in range(i, i + window)) for i in range(n_items)]
    return random_log(n_users, n_items, (8, 16), seed=seed), titles


@pytest.mark.parametrize("anchor, gives_away", [("positive", True), ("history", False)])
def test_positive_anchor_makes_the_positive_a_hub_and_history_anchor_does_not(anchor, gives_away):
    from pipeline.eval.floors import centrality, floor_scores
    from pipeline.eval.metrics import positive_rank
    from pipeline.eval.stats import wilson

    splits, titles = _hub_catalogue()
    vectors = tfidf_vectors(titles, max_df=1.0)
    cfg = NegativesConfig(seed=5, text_fraction=0.5, text_pool=8, text_anchor=anchor)
    tables, stats = make_all(splits, titles, cfg, vectors=vectors)
    assert stats["text_anchor"] == anchor
    t = tables["test_topk"]
    cands = np.stack(t["candidates"].to_numpy(zero_copy_only=False)).astype(np.int64)
    hits = positive_rank(centrality(vectors, cands), t["label_index"].to_numpy()) < 1
    iv = wilson(int(hits.sum()), len(hits))
    chance = 1 / cands.shape[1]
    if gives_away:
        assert iv.low > chance  # the user-agnostic scorer wins
    else:
        assert iv.low <= chance  # indistinguishable from (or below) chance
        anti = positive_rank(-floor_scores("centrality", cands, vectors, np.zeros(len(titles)), 0),
                             t["label_index"].to_numpy()) < 1
        assert wilson(int(anti.sum()), len(anti)).low <= chance


def test_history_pool_round_robin_and_dedup():
    from pipeline.data.negatives import history_pool, recent_items

    nb = {1: [10, 11, 12], 2: [20, 10, 21], 3: [30, 31, 32]}
    anchors = np.array([[1, 2], [-1, 3]])
    pool = history_pool(anchors, lambda items: np.array([nb[int(i)] for i in items]), 3)
    # newest anchor (2) first, then 1; rank-major; 10 appears twice and is kept once
    assert pool.tolist() == [[20, 10, 11], [30, 31, 32]]
    got = recent_items(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 8]), np.array([0, 1, 2]), 2)
    assert got.tolist() == [[6, 7], [-1, 8], [-1, -1]]


def test_text_anchor_is_validated():
    with pytest.raises(PipelineError, match="negatives.text_anchor must be one of history, positive, got 'item'"):
        NegativesConfig(text_anchor="item")
    with pytest.raises(PipelineError, match="negatives.text_history"):
        NegativesConfig(text_history=0)
