"""The evaluation module against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import pyarrow as pa
import pytest

from pipeline.eval.metrics import (best_threshold, binary_metrics, candidate_metrics, known_items, positive_rank,
                              rating_metrics, retrieval_metrics)


def test_candidate_metrics_by_hand():
    scores = np.array([[0.9, 0.1, 0.3],   # positive at 0, rank 0
                       [0.2, 0.8, 0.5],   # positive at 2, one ahead -> rank 1
                       [0.1, 0.2, 0.3]])  # positive at 0, rank 2
    m = candidate_metrics(scores, np.array([0, 2, 0]), ks=(1, 2))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@2"] == pytest.approx(2 / 3)
    assert m["NDCG@1"] == pytest.approx(1 / 3)
    assert m["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_ties_never_count_as_hits():
    scores = np.zeros((4, 20))
    assert candidate_metrics(scores, np.arange(4), ks=(1, 2))["HR@2"] == 0.0
    assert positive_rank(np.array([[1.0, 1.0, 0.0]]), np.array([1]))[0] == 1
    assert positive_rank(np.array([[np.nan, 1.0, 0.0]]), np.array([0]))[0] == 2


def test_binary_threshold_from_valid_by_hand():
    # valid cuts: >=0.9 F1 2/4, >=0.6 F1 4/5, >=0.4 F1 4/6, >=0.3 F1 6/7 (best), >=0.2 F1 6/8
    t = best_threshold(np.array([0.9, 0.6, 0.4, 0.3, 0.2]), np.array([1, 1, 0, 1, 0]))
    assert t == 0.3
    m = binary_metrics(np.array([0.7, 0.5, 0.65, 0.1]), np.array([1, 1, 0, 0]), t)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0 and m["f1"] == pytest.approx(0.8)


def test_binary_threshold_does_not_split_ties():
    t = best_threshold(np.array([0.5, 0.5, 0.5, 0.1]), np.array([1, 0, 0, 0]))
    assert t in (0.5, 0.1)
    assert binary_metrics(np.array([0.5, 0.5]), np.array([1, 0]), t)["recall"] == 1.0


def test_retrieval_masks_known_items_but_not_the_target():
    n_users, n_items = 2, 5
    train = pa.table({"uid": [0, 0, 1], "iid": [4, 3, 0]})
    known = known_items(n_users, n_items, train)
    table = np.array([[0.1, 0.2, 0.3, 0.9, 0.8],    # user 0: 3, 4 masked -> target 2 ranks first
                      [0.9, 0.1, 0.5, 0.4, 0.3]])   # user 1: 0 masked -> target 3 behind 2 -> rank 1
    m = retrieval_metrics(lambda u: table[u], np.array([0, 1]), np.array([2, 3]), known, ks=(1, 5))
    assert m["Recall@1"] == 0.5 and m["Recall@5"] == 1.0
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    # a known item that is also the target keeps its score
    known2 = known_items(n_users, n_items, pa.table({"uid": [0], "iid": [2]}))
    assert retrieval_metrics(lambda u: table[u], np.array([0]), np.array([2]), known2, ks=(3,))["Recall@3"] == 1.0


def test_rating_metrics_by_hand():
    m = rating_metrics(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert m["RMSE"] == pytest.approx(math.sqrt(5 / 3)) and m["MAE"] == pytest.approx(1.0)


# ---------------------------------------------------------------- the one evaluator


def test_summarize_hand_case():
    from pipeline.eval.metrics import Outcomes, StatsConfig, summarize
    from pipeline.eval.stats import wilson

    out = Outcomes()
    # 4 users, top-K scores over 3 candidates: ranks 0, 1, 0, 2 -> HR@1 = .5
    scores = np.array([[3.0, 1, 2], [2.0, 3, 1], [1.0, 5, 0], [0.0, 1, 2]])
    out.candidates("topk", [0, 1, 2, 3], scores, [0, 0, 1, 0])
    # binary: valid fixes the threshold at 0.6 (F1-best); test rows scored against it
    out.binary("valid", [0, 0, 1, 1], [1, 0, 1, 0], [0.9, 0.1, 0.6, 0.5])
    out.binary("test", [0, 0, 1, 1, 2, 2, 3, 3], [1, 0, 1, 0, 1, 0, 1, 0], [0.7, 0.2, 0.5, 0.65, 0.9, 0.1, 0.8, 0.3])
    s = summarize(out.table(), None, StatsConfig(bootstrap_samples=200))
    assert s["users_scored"] == 4
    assert s["topk"]["HR@1"] == 0.5 and s["topk"]["HR@2"] == 0.75
    iv = wilson(2, 4)
    assert s["ci"]["topk/HR@1"] == [iv.low, iv.high]
    b = s["binary"]
    assert b["threshold"] == 0.6
    # predicted yes: .7, .65, .9, .8 -> tp 3 (.7, .9, .8), fp 1 (.65); fn 1 (.5)
    assert (b["precision"], b["recall"], b["accuracy"]) == (0.75, 0.75, 0.75)
    # AUC: of 16 (pos, neg) pairs, only (.5 vs .65) is misordered -> 15/16
    assert b["auc"] == 15 / 16 and b["f1_floor"] == 2 * 0.5 / 1.5
    lo, hi = s["ci"]["binary/f1"]
    assert lo <= b["f1"] <= hi
    # a user subset: only users 0 and 2 (both hits in top-K)
    sub = summarize(out.table(), np.array([0, 2]), StatsConfig(bootstrap_samples=200))
    assert sub["users_scored"] == 2 and sub["topk"]["HR@1"] == 1.0


def test_retrieval_ranks_both_conventions():
    from pipeline.eval.metrics import retrieval_ranks

    scores = np.array([[5.0, 4, 3, 2]])  # target item 2; item 0 is known (train)
    known = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    masked, unmasked = retrieval_ranks(lambda u: scores, np.array([0]), np.array([2]), known)
    assert masked.tolist() == [1] and unmasked.tolist() == [2]
