"""The one evaluation module: every model in the project is scored by these functions.

Protocols (docs/design.md, "Evaluation protocol"):
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


def per_user_at_k(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's hit@k (0/1) and NDCG@k (one target) from 0-based ranks: what every rank
    metric, its interval and its paired test are computed from."""
    ranks = np.asarray(ranks)
    hit = ranks < k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)


def rank_metrics(ranks: np.ndarray, ks: Iterable[int], prefix: str = "HR") -> dict[str, float]:
    """HR@k (or Recall@k with one target per user) and NDCG@k from 0-based ranks."""
    out = {}
    for k in ks:
        hit, ndcg = per_user_at_k(ranks, k)
        out[f"{prefix}@{k}"] = float(hit.mean()) if len(hit) else 0.0
        out[f"NDCG@{k}"] = float(ndcg.mean()) if len(hit) else 0.0
    return out


def candidate_matrix(t) -> np.ndarray:
    """[rows, candidates] int64 ids of a candidate-set table (pipeline.data.negatives writes them)."""
    return np.stack(t["candidates"].to_numpy(zero_copy_only=False)).astype(np.int64)


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
    """Full-item ranking (Recall@k, NDCG@k), the user's known items masked (retrieval_ranks)."""
    return rank_metrics(retrieval_ranks(score_users, users, targets, known, batch)[0], ks, prefix="Recall")


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


# --------------------------------------------------------------------------------------
# The one evaluator. Every model (domain, floor, LLM, BDLM-drs) is reduced to per-user
# outcomes -- the positive's rank per candidate/retrieval protocol, the binary rows' scores
# and labels, the rating predictions -- by a thin score adapter; `summarize` turns outcomes of
# any user set into the metrics, their 95% intervals and the binary threshold, so the rules
# below (ks, threshold on valid, tie handling, intervals) live here only. The outcomes are
# also what the report's paired tests read: two rows are compared on the same users.
# --------------------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402

import pyarrow as pa  # noqa: E402


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str                  # candidates | retrieval | binary | rating
    ks: tuple[int, ...] = ()
    hit: str = "HR"            # name of the hit metric (Recall for retrieval)


PROTOCOLS = {
    "topk": Protocol("topk", "candidates", CANDIDATE_KS),                        # BDLM: 1 + 19
    "ranking": Protocol("ranking", "candidates", (1, 5, 10)),                     # Cao et al.: 1 + 99
    # full-item retrieval, the user's train (+ valid at test) items masked: RecBole's convention
    "retrieval": Protocol("retrieval", "retrieval", RETRIEVAL_KS, "Recall"),
    # nothing masked: the P5/TIGER convention most published LLM-recommendation numbers use
    "retrieval_unmasked": Protocol("retrieval_unmasked", "retrieval", RETRIEVAL_KS, "Recall"),
    "binary": Protocol("binary", "binary"),                                      # threshold on valid
    "rating": Protocol("rating", "rating"),
}
OUTCOME_SCHEMA = pa.schema([("protocol", pa.string()), ("uid", pa.int32()), ("rank", pa.int32()),
                            ("target", pa.float64()), ("score", pa.float64())])


class Outcomes:
    """Per-user outcomes of one model, collected protocol by protocol (OUTCOME_SCHEMA):
    rank rows for candidate and retrieval protocols, (target = label, score) rows for the
    binary sets (`binary` on test, `binary_valid` to fix the threshold), (target = rating,
    score = prediction) rows for rating."""

    def __init__(self):
        self.parts: list[pa.Table] = []

    def _add(self, protocol: str, uids, rank=None, target=None, score=None) -> None:
        n = len(uids)
        nan = np.full(n, np.nan)
        self.parts.append(pa.table({
            "protocol": pa.array([protocol] * n, pa.string()), "uid": pa.array(np.asarray(uids), pa.int32()),
            "rank": pa.array(np.full(n, -1) if rank is None else np.asarray(rank), pa.int32()),
            "target": pa.array(nan if target is None else np.asarray(target, dtype=np.float64)),
            "score": pa.array(nan if score is None else np.asarray(score, dtype=np.float64))},
            schema=OUTCOME_SCHEMA))

    def candidates(self, protocol: str, uids, scores: np.ndarray, label_index) -> None:
        self._add(protocol, uids, rank=positive_rank(scores, np.asarray(label_index)))

    def ranks(self, protocol: str, uids, ranks) -> None:
        self._add(protocol, uids, rank=ranks)

    def binary(self, split: str, uids, labels, scores) -> None:
        self._add("binary" if split == "test" else f"binary_{split}", uids, target=labels, score=scores)

    def rating(self, uids, true, pred) -> None:
        self._add("rating", uids, target=true, score=pred)

    def table(self) -> pa.Table:
        return pa.concat_tables(self.parts) if self.parts else OUTCOME_SCHEMA.empty_table()


def retrieval_ranks(score_users: Callable[[np.ndarray], np.ndarray], users: np.ndarray, targets: np.ndarray,
                    known: sp.csr_matrix, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each target over all items: (known items masked, nothing masked).
    `known` is users x items (train, plus valid at test time); the target is never masked."""
    users, targets = np.asarray(users), np.asarray(targets)
    masked = np.empty(len(users), dtype=np.int64)
    unmasked = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch):
        u, t = users[start:start + batch], targets[start:start + batch]
        scores = np.asarray(score_users(u), dtype=np.float64)
        rows = np.arange(len(u))
        target_score = scores[rows, t].copy()
        nan = np.isnan(target_score)
        unmasked[start:start + len(u)] = np.where(nan, scores.shape[1] - 1,
                                                  (scores >= target_score[:, None]).sum(axis=1) - 1)
        mask = known[u].tocoo()
        scores[mask.row, mask.col] = -np.inf
        scores[rows, t] = target_score
        masked[start:start + len(u)] = np.where(nan, scores.shape[1] - 1,
                                                (scores >= target_score[:, None]).sum(axis=1) - 1)
    return masked, unmasked


@dataclass(frozen=True)
class StatsConfig:
    """params.yaml `evaluation`: interval level, bootstrap resamples, bootstrap seed."""
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    seed: int = 0


def _rows_of(t: pa.Table, protocol: str, users: np.ndarray | None) -> dict[str, np.ndarray]:
    import pyarrow.compute as pc

    sel = t.filter(pc.equal(t["protocol"], protocol))
    cols = {c: sel[c].to_numpy() for c in ("uid", "rank", "target", "score")}
    if users is not None:
        keep = np.isin(cols["uid"], users)
        cols = {c: v[keep] for c, v in cols.items()}
    return cols


def _per_user(uids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unique users and, for each, the positions of its rows (bootstrap resamples users)."""
    order = np.argsort(uids, kind="stable")
    uniq, starts = np.unique(uids[order], return_index=True)
    return uniq, np.split(order, starts[1:])


def summarize(outcomes: pa.Table, users: np.ndarray | None = None, cfg: StatsConfig = StatsConfig()) -> dict:
    """Metrics of every protocol present in `outcomes`, on `users` (None: all), each with its
    interval under "ci" as {"<protocol>/<metric>": [low, high]}: Wilson for hit rates
    (one Bernoulli outcome per user), a percentile bootstrap over users otherwise."""
    from pipeline.eval import stats

    out: dict = {"ci": {}}
    ci = out["ci"]
    scored: set[int] = set()
    for name, proto in PROTOCOLS.items():
        r = _rows_of(outcomes, name, users)
        if not len(r["uid"]):
            continue
        scored.update(r["uid"].tolist())
        if proto.kind in ("candidates", "retrieval"):
            ranks = r["rank"]
            block = {}
            for k in proto.ks:
                hit, ndcg = per_user_at_k(ranks, k)
                block[f"{proto.hit}@{k}"] = float(hit.mean())
                block[f"NDCG@{k}"] = float(ndcg.mean())
                h = stats.wilson(int(hit.sum()), len(hit), cfg.confidence)
                b = stats.bootstrap_mean(ndcg, cfg.confidence, cfg.bootstrap_samples, cfg.seed)
                ci[f"{name}/{proto.hit}@{k}"], ci[f"{name}/NDCG@{k}"] = [h.low, h.high], [b.low, b.high]
            out[name] = block
        elif proto.kind == "binary":
            v = _rows_of(outcomes, "binary_valid", users)
            if not len(v["uid"]):
                continue  # no valid rows: no threshold, no binary metrics
            threshold = best_threshold(v["score"], v["target"])
            y, s = r["target"].astype(bool), r["score"]
            block = _binary_block(s, y, threshold)
            block["f1_floor"] = constant_f1(y)
            _, groups = _per_user(r["uid"])

            def on(idx, key, s=s, y=y, groups=groups, threshold=threshold):
                rows = np.concatenate([groups[i] for i in idx])  # a resample of users, all their rows
                return _binary_block(s[rows], y[rows], threshold, only=key)[key]

            for key in ("precision", "recall", "f1", "accuracy", "auc"):
                iv = stats.bootstrap_statistic(len(groups), lambda idx, key=key: on(idx, key), cfg.confidence,
                                               min(cfg.bootstrap_samples, 500), cfg.seed, value=block[key])
                ci[f"binary/{key}"] = [iv.low, iv.high]
            out["binary"] = block
        elif proto.kind == "rating":
            err = r["score"] - r["target"]
            out["rating"] = {"RMSE": float(np.sqrt(np.mean(err ** 2))), "MAE": float(np.mean(np.abs(err)))}
            n = len(err)
            for key, f in (("RMSE", lambda idx: float(np.sqrt(np.mean(err[idx] ** 2)))),
                           ("MAE", lambda idx: float(np.mean(np.abs(err[idx]))))):
                iv = stats.bootstrap_statistic(n, f, cfg.confidence, cfg.bootstrap_samples, cfg.seed)
                ci[f"rating/{key}"] = [iv.low, iv.high]
    out["users_scored"] = len(scored)
    return out


def _binary_block(scores: np.ndarray, labels: np.ndarray, threshold: float, only: str | None = None) -> dict:
    """Interaction prediction at a fixed threshold: precision, recall, F1, accuracy, AUC (`only`
    = "auc" skips the rest, which the AUC's bootstrap does not need)."""
    from pipeline.eval import stats

    if only == "auc":
        return {"auc": stats.auc(scores, labels)}
    block = binary_metrics(scores, labels, threshold)
    block["accuracy"] = float(((np.asarray(scores) >= threshold) == labels).mean())
    if only is None:
        block["auc"] = stats.auc(scores, labels)
    return block


def constant_f1(labels: np.ndarray) -> float:
    """F1 of a scorer that says "Yes" to every row: the floor F1 is read against (with one
    negative per positive, precision .5 and recall 1 give .667)."""
    p = float(np.mean(labels)) if len(labels) else 0.0
    return 2 * p / (1 + p) if p > 0 else 0.0


def outcome_users(outcomes: pa.Table, protocol: str) -> np.ndarray:
    """The users (sorted) that have an outcome for `protocol`."""
    return np.unique(_rows_of(outcomes, protocol, None)["uid"])


def per_user_metric(outcomes: pa.Table, protocol: str, metric: str, users: np.ndarray) -> np.ndarray:
    """Per-user outcome of a rank metric ("HR@k"/"Recall@k": 0/1 hits; "NDCG@k": real) for each
    of `users`, in that order; NaN where a user has no row (the paired tests refuse those)."""
    name, k = metric.split("@")
    if name not in ("HR", "Recall", "NDCG"):
        raise ValueError(f"no per-user outcome for metric {metric!r} (HR@k, Recall@k or NDCG@k)")
    r = _rows_of(outcomes, protocol, None)
    at = dict(zip(r["uid"].tolist(), range(len(r["uid"]))))
    hit, ndcg = per_user_at_k(r["rank"], int(k))
    values = ndcg if name == "NDCG" else hit
    return np.array([values[at[u]] if u in at else np.nan for u in np.asarray(users).tolist()])
