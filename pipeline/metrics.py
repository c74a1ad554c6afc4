"""The one evaluation module: every model in the project is scored by these functions.

Protocols (DESIGN.md, "Evaluation protocol"):
- candidate sets (top-K 1+19, ranking 1+99): HR@k and NDCG@k of the positive's rank;
- binary sets: precision, recall and F1 of the positive class at a threshold chosen on
  valid (never on test);
- full-item retrieval: Recall@k and NDCG@k over all items, the user's known items masked;
- rating prediction: RMSE and MAE.
Ties are pessimistic: a negative scored equal to the positive ranks ahead of it, so a model
that scores everything the same gets no hits (HR@1 = 0), never a lucky one.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import scipy.sparse as sp

CANDIDATE_KS = (1, 2, 5, 10)
RETRIEVAL_KS = (5, 10, 20)


def positive_rank(scores: np.ndarray, label_index: np.ndarray) -> np.ndarray:
    """0-based rank of the positive in each row: #others scored >= it (pessimistic ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(scores))
    pos = scores[rows, label_index]
    ahead = (scores >= pos[:, None]).sum(axis=1) - 1  # minus the positive itself
    ahead[np.isnan(pos)] = scores.shape[1] - 1  # a NaN score is never a hit
    return ahead


def rank_metrics(ranks: np.ndarray, ks: Iterable[int], prefix: str = "HR") -> dict[str, float]:
    """HR@k (or Recall@k with one target per user) and NDCG@k from 0-based ranks."""
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"{prefix}@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
    return out


def candidate_metrics(scores: np.ndarray, label_index: np.ndarray, ks: Iterable[int] = CANDIDATE_KS) -> dict:
    """Scores [users, candidates] for a candidate-set protocol (top-K 1+19 or ranking 1+99)."""
    return rank_metrics(positive_rank(scores, np.asarray(label_index)), ks)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The decision threshold maximising F1 of the positive class; call it on valid only."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    predicted = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (predicted + y.sum())
    # predict "yes" for score >= s[i]; only cut where the next score differs
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    f1 = np.where(last_of_tie, f1, -1.0)
    return float(s[int(np.argmax(f1))]) if len(s) else 0.5


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    y = np.asarray(labels).astype(bool)
    tp = float((pred & y).sum())
    precision = tp / pred.sum() if pred.sum() else 0.0
    recall = tp / y.sum() if y.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": float(threshold)}


def retrieval_metrics(score_users: Callable[[np.ndarray], np.ndarray], users: np.ndarray, targets: np.ndarray,
                      known: sp.csr_matrix, ks: Iterable[int] = RETRIEVAL_KS, batch: int = 1024) -> dict:
    """Full-item ranking. `score_users(uids) -> [len(uids), n_items]` scores; `known` is a
    users x items CSR of items to mask (the user's training history, plus valid at test
    time); the target itself is never masked."""
    users, targets = np.asarray(users), np.asarray(targets)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch):
        u, t = users[start:start + batch], targets[start:start + batch]
        scores = np.asarray(score_users(u), dtype=np.float64)
        rows = np.arange(len(u))
        target_score = scores[rows, t].copy()
        mask = known[u].tocoo()
        scores[mask.row, mask.col] = -np.inf
        scores[rows, t] = target_score
        ranks[start:start + len(u)] = (scores >= target_score[:, None]).sum(axis=1) - 1
        ranks[start:start + len(u)][np.isnan(target_score)] = scores.shape[1] - 1
    return rank_metrics(ranks, ks, prefix="Recall")


def rating_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return {"RMSE": float(np.sqrt(np.mean(err ** 2))), "MAE": float(np.mean(np.abs(err)))}


def known_items(n_users: int, n_items: int, *splits) -> sp.csr_matrix:
    """users x items CSR with a 1 for every (uid, iid) in the given split tables."""
    u = np.concatenate([np.asarray(s["uid"]) for s in splits])
    i = np.concatenate([np.asarray(s["iid"]) for s in splits])
    m = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))
    m.sum_duplicates()
    return m
