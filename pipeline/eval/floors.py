"""User-agnostic floors: scorers that never see the user, scored like every model.

A trained model is only worth what it adds over these. If one of them beats chance, the
candidate sets give the positive away and no number measured on them means what it says.
- `random`: seeded uniform scores (chance, with its interval).
- `centrality`: a candidate's summed title similarity to the other candidates of its set.
  With text negatives drawn around the positive (negatives.text_anchor: positive) the
  positive is the text hub of its set and this scorer wins (ML-100K test HR@1 .23, chance .05).
- `centrality_pop`: centrality + log-popularity, each z-scored within the set.
Popularity alone is the `mostpop` domain model (a real baseline, expected above chance).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

FLOORS = ("random", "centrality", "centrality_pop")


def centrality(vectors, cands: np.ndarray, block: int = 4096) -> np.ndarray:
    """[U, C]: for each candidate, the sum of its cosine similarity to the other candidates of
    its row. `vectors` are L2-normalised item text vectors (row = iid; sparse or dense)."""
    cands = np.asarray(cands, dtype=np.int64)
    out = np.zeros(cands.shape, dtype=np.float64)
    c = cands.shape[1]
    for s in range(0, len(cands), block):
        rows = cands[s:s + block]
        x = vectors[rows.ravel()]
        n = len(rows)
        # summed vector of each row's candidates, repeated for each of its candidates
        group = sp.csr_matrix((np.ones(n * c), (np.repeat(np.arange(n), c), np.arange(n * c))), shape=(n, n * c))
        total = group @ x
        total_rep = group.T @ total
        if sp.issparse(x):
            dot = np.asarray(x.multiply(total_rep).sum(axis=1)).ravel()
            self_dot = np.asarray(x.multiply(x).sum(axis=1)).ravel()
        else:
            dot = np.einsum("ij,ij->i", x, np.asarray(total_rep))
            self_dot = np.einsum("ij,ij->i", x, x)
        out[s:s + n] = (dot - self_dot).reshape(n, c)
    return out


def has_text(vectors) -> bool:
    """Whether any item has a non-empty text vector (a catalogue without titles has none)."""
    return bool(vectors.nnz) if sp.issparse(vectors) else bool(np.any(np.asarray(vectors) != 0))


def _zscore_rows(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=1, keepdims=True)
    return (a - a.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def log_popularity(train_iids: np.ndarray, n_items: int) -> np.ndarray:
    return np.log1p(np.bincount(np.asarray(train_iids, dtype=np.int64), minlength=n_items).astype(np.float64))


def with_popularity(cent: np.ndarray, cands: np.ndarray, log_pop: np.ndarray) -> np.ndarray:
    """centrality + log-popularity, each z-scored within its set."""
    return _zscore_rows(cent) + _zscore_rows(log_pop[cands])


def floor_scores(name: str, cands: np.ndarray, vectors, log_pop: np.ndarray, seed: int,
                 cent: np.ndarray | None = None) -> np.ndarray:
    """[U, C] scores of floor `name` for candidate rows `cands`; `cent` is their centrality when
    the caller has it already (it is the costly part, shared by two floors and the check)."""
    if name == "random":
        return np.random.default_rng(seed).random(cands.shape)
    if name not in FLOORS:
        raise ValueError(f"unknown floor {name!r}; known: {', '.join(FLOORS)}")
    cent = centrality(vectors, cands) if cent is None else cent
    return cent if name == "centrality" else with_popularity(cent, cands, log_pop)


# scorers the give-away check runs: the floors, plus centrality reversed (a positive that is
# the *least* central candidate gives itself away just as well)
CHECKED = ("centrality", "anti_centrality", "centrality_pop")


def giveaway_check(sets: dict, vectors, log_pop: np.ndarray, confidence: float = 0.95,
                   cent: dict[str, np.ndarray] | None = None) -> dict:
    """HR@1 of each user-agnostic text scorer on every candidate set ('<split>_<protocol>' ->
    table with candidates, label_index), its Wilson interval and chance (1 / candidates).
    `gives_away` is true where a text-only scorer (centrality or its reverse) beats chance by
    more than its interval allows: a trained model's number on those sets is not what it says.
    `cent` maps a set's name to its centrality when the caller has computed it already."""
    from pipeline.eval.metrics import candidate_matrix, positive_rank
    from pipeline.eval.stats import wilson

    rows, flagged = [], []
    for name, t in sorted(sets.items()):
        if "candidates" not in t.column_names or not t.num_rows:
            continue
        cands = candidate_matrix(t)
        chance = 1.0 / cands.shape[1]
        c = centrality(vectors, cands) if cent is None or name not in cent else cent[name]
        scorers = {"centrality": c, "anti_centrality": -c, "centrality_pop": with_popularity(c, cands, log_pop)}
        for scorer in CHECKED:
            hits = positive_rank(scorers[scorer], t["label_index"].to_numpy()) < 1
            iv = wilson(int(hits.sum()), len(hits), confidence)
            beats = bool(iv.low > chance)
            rows.append({"set": name, "scorer": scorer, "HR@1": iv.value, "low": iv.low, "high": iv.high,
                         "chance": chance, "beats_chance": beats, "users": int(len(hits))})
            if beats and scorer != "centrality_pop":  # popularity may beat chance: MostPop is a baseline
                flagged.append(f"{scorer} on {name}: HR@1 {iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}] vs chance {chance:.3f}")
    return {"rows": rows, "gives_away": bool(flagged), "flagged": flagged}
