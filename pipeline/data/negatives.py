"""Evaluation candidate sets: top-K (1 + 19), ranking (1 + 99) and binary (1 + 1) per user.

A negative is an item the user never interacted with in any split. Each set mixes
- text-similar negatives (pipeline.data.textsim), a random `text_fraction` of the negatives drawn
  from a pool of `text_pool` items with similar titles, which makes the sets hard; and
- popularity negatives: drawn with weight (train count + 1) ** alpha, without replacement,
  to fill the rest (alpha = 0 is uniform; the +1 keeps items unseen in train drawable).

Where the text pool comes from (`text_anchor`) decides whether the sets can be solved without
the user. `positive` (the papers' sampler) takes the nearest titles of the held-out positive:
the positive is then the one candidate similar to many others, the text hub of its set, and a
scorer that never sees the user (summed title similarity to the other candidates) beats the
trained models (ML-100K: HR@1 .23 against LightGCN's .215, chance .05). `history`, the
default, takes the nearest titles of the user's `text_history` most recent training items
(round-robin over them): items similar to what this user liked, hard for this user, and not
centred on the positive. The floors stage measures the give-away on every build.
Candidate order is shuffled with the seed; `label_index` says where the positive landed.
Everything is vectorised over users, so a million-item catalogue costs seconds, not hours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.errors import PipelineError

PROTOCOLS = {"topk": "topk_negatives", "ranking": "ranking_negatives", "binary": "binary_negatives"}
TEXT_ANCHORS = ("history", "positive")


@dataclass(frozen=True)
class NegativesConfig:
    seed: int = 0
    topk_negatives: int = 19
    ranking_negatives: int = 99
    binary_negatives: int = 1
    popularity_alpha: float = 0.75
    text_fraction: float = 0.5
    text_pool: int = 50
    text_backend: str = "tfidf"
    text_anchor: str = "history"
    text_history: int = 10
    user_block: int = 100_000

    def __post_init__(self):
        if not 0.0 <= self.text_fraction <= 1.0:
            raise PipelineError(f"params.yaml: negatives.text_fraction must be in [0, 1], got {self.text_fraction}")
        if self.popularity_alpha < 0:
            raise PipelineError(f"params.yaml: negatives.popularity_alpha must be >= 0, got {self.popularity_alpha}")
        for key in PROTOCOLS.values():
            if getattr(self, key) < 1:
                raise PipelineError(f"params.yaml: negatives.{key} must be >= 1, got {getattr(self, key)}")
        if self.text_anchor not in TEXT_ANCHORS:
            raise PipelineError(f"params.yaml: negatives.text_anchor must be one of {', '.join(TEXT_ANCHORS)}, "
                                f"got {self.text_anchor!r}")
        if self.text_history < 1:
            raise PipelineError(f"params.yaml: negatives.text_history must be >= 1, got {self.text_history}")
        if self.text_pool < 1:
            raise PipelineError(f"params.yaml: negatives.text_pool must be >= 1, got {self.text_pool}")
        if self.text_backend not in ("tfidf", "minilm"):
            raise PipelineError(f"params.yaml: negatives.text_backend must be 'tfidf' or 'minilm', "
                                f"got {self.text_backend!r}")


class Forbidden:
    """Every (user, item) pair seen in any split, as sorted int64 keys uid * n_items + iid."""

    def __init__(self, uids: np.ndarray, iids: np.ndarray, n_items: int):
        self.n_items = n_items
        self.keys = np.unique(uids.astype(np.int64) * n_items + iids.astype(np.int64))

    def contains(self, uids: np.ndarray, iids: np.ndarray) -> np.ndarray:
        keys = uids.astype(np.int64) * self.n_items + iids.astype(np.int64)
        idx = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[idx] == keys

    def allowed_counts(self, uids: np.ndarray) -> np.ndarray:
        lo = np.searchsorted(self.keys, uids.astype(np.int64) * self.n_items)
        hi = np.searchsorted(self.keys, (uids.astype(np.int64) + 1) * self.n_items)
        return self.n_items - (hi - lo)


def popularity_weights(train_iids: np.ndarray, n_items: int, alpha: float) -> np.ndarray:
    w = (np.bincount(train_iids, minlength=n_items).astype(np.float64) + 1.0) ** alpha
    return np.cumsum(w / w.sum())


def draw_negatives(rng: np.random.Generator, uids: np.ndarray, m: int, forbidden: Forbidden,
                   pop_cdf: np.ndarray, text_nb: np.ndarray | None, n_text: int,
                   max_rounds: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """[U, m] distinct negatives per user and the number drawn from the text pool per row."""
    n_users = len(uids)
    out = np.full((n_users, m), -1, dtype=np.int32)
    filled = np.zeros(n_users, dtype=np.int64)
    short = forbidden.allowed_counts(uids) < m
    if short.any():
        u = int(uids[np.argmax(short)])
        raise PipelineError(f"user uid={u} interacted with all but {forbidden.allowed_counts(uids[short])[0]} "
                            f"items; cannot draw {m} negatives (lower the candidate count in params.yaml)")
    if text_nb is not None and n_text > 0:
        valid = (text_nb >= 0) & ~forbidden.contains(np.repeat(uids, text_nb.shape[1]).reshape(text_nb.shape),
                                                     np.maximum(text_nb, 0))
        prio = np.where(valid, rng.random(text_nb.shape), np.inf)
        pick = np.argsort(prio, axis=1, kind="stable")[:, :n_text]
        chosen = np.take_along_axis(text_nb, pick, axis=1)
        ok = np.take_along_axis(valid, pick, axis=1)
        out[:, :pick.shape[1]] = np.where(ok, chosen, -1)
        # valid picks come first in each row (sorted by priority), so counts are prefix lengths
        filled = ok.sum(axis=1)
    n_from_text = filled.copy()
    rows = np.flatnonzero(filled < m)
    for _ in range(max_rounds):
        if len(rows) == 0:
            break
        need = m - filled[rows]
        width = int(need.max()) * 2 + 8
        cand = np.searchsorted(pop_cdf, rng.random((len(rows), width)), side="right").astype(np.int32)
        cand = np.minimum(cand, len(pop_cdf) - 1)
        u = np.repeat(uids[rows], width).reshape(cand.shape)
        ok = ~forbidden.contains(u, cand)
        ok &= ~_in_rows(cand, out[rows])
        ok &= _first_in_row(cand)
        take = ok & (np.cumsum(ok, axis=1) <= need[:, None])
        r_idx, c_idx = np.nonzero(take)
        slot = filled[rows][r_idx] + (np.cumsum(take, axis=1)[r_idx, c_idx] - 1)
        out[rows[r_idx], slot] = cand[r_idx, c_idx]
        filled[rows] += take.sum(axis=1)
        rows = rows[filled[rows] < m]
    for r in rows:  # users with almost every item taken: draw exactly from what is left
        allowed = np.setdiff1d(np.arange(forbidden.n_items), out[r][out[r] >= 0])
        allowed = allowed[~forbidden.contains(np.full(len(allowed), uids[r]), allowed)]
        out[r, filled[r]:] = rng.choice(allowed, m - filled[r], replace=False)
    return out, n_from_text


def _in_rows(cand: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """cand[r, j] in chosen[r, :] (chosen is -1 padded), vectorised by sorting each row."""
    srt = np.sort(chosen, axis=1)
    pos = np.minimum(_row_searchsorted(srt, cand), srt.shape[1] - 1)
    return np.take_along_axis(srt, pos, axis=1) == cand


def _row_searchsorted(srt: np.ndarray, vals: np.ndarray) -> np.ndarray:
    big = np.int64(max(int(srt.max(initial=0)), int(vals.max(initial=0))) + 2)
    offset = np.arange(srt.shape[0], dtype=np.int64)[:, None] * big
    flat = (srt.astype(np.int64) + 1 + offset).ravel()
    pos = np.searchsorted(flat, (vals.astype(np.int64) + 1 + offset).ravel())
    return pos.reshape(vals.shape) - (np.arange(srt.shape[0])[:, None] * srt.shape[1])


def _first_in_row(cand: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each value within its row."""
    order = np.argsort(cand, axis=1, kind="stable")
    srt = np.take_along_axis(cand, order, axis=1)
    first_sorted = np.ones_like(srt, dtype=bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first


def candidate_sets(uids: np.ndarray, pos: np.ndarray, negs: np.ndarray, n_text: np.ndarray,
                   rng: np.random.Generator) -> pa.Table:
    """Positive + negatives per user, shuffled; `label_index` is the positive's position."""
    cands = np.concatenate([pos[:, None].astype(np.int32), negs], axis=1)
    perm = np.argsort(rng.random(cands.shape), axis=1)
    cands = np.take_along_axis(cands, perm, axis=1)
    label_index = np.argmax(perm == 0, axis=1)
    width = cands.shape[1]
    offsets = pa.array(np.arange(0, (len(uids) + 1) * width, width, dtype=np.int32))
    return pa.table({
        "uid": pa.array(uids.astype(np.int32)),
        "pos_iid": pa.array(pos.astype(np.int32)),
        "candidates": pa.ListArray.from_arrays(offsets, pa.array(cands.ravel())),
        "label_index": pa.array(label_index.astype(np.int16)),
        "n_text_negatives": pa.array(n_text.astype(np.int16)),
    })


def binary_set(uids: np.ndarray, pos: np.ndarray, negs: np.ndarray) -> pa.Table:
    """Two rows per user: the held-out positive (label 1) and its sampled negatives (label 0)."""
    k = negs.shape[1]
    return pa.table({
        "uid": pa.array(np.repeat(uids, k + 1).astype(np.int32)),
        "iid": pa.array(np.concatenate([pos[:, None], negs], axis=1).ravel().astype(np.int32)),
        "label": pa.array(np.tile(np.r_[1, np.zeros(k, dtype=np.int8)].astype(np.int8), len(uids))),
    })


def build_sets(split_name: str, split_index: int, eval_uids: np.ndarray, eval_pos: np.ndarray,
               forbidden: Forbidden, pop_cdf: np.ndarray, text_pool_of: Callable[[slice], np.ndarray] | None,
               cfg: NegativesConfig) -> dict[str, pa.Table]:
    """All protocols for one evaluation split; users processed in blocks to bound memory.
    `text_pool_of(rows)` gives the text-similar pool [len(rows), <= text_pool] (-1 padded) of
    those users, or None for popularity negatives only."""
    out: dict[str, list[pa.Table]] = {p: [] for p in PROTOCOLS}
    for p_index, (protocol, key) in enumerate(PROTOCOLS.items()):
        m = getattr(cfg, key)
        n_text = int(round(cfg.text_fraction * m))
        rng = np.random.default_rng([cfg.seed, split_index, p_index])
        for start in range(0, len(eval_uids), cfg.user_block):
            sl = slice(start, start + cfg.user_block)
            nb = None if text_pool_of is None else text_pool_of(sl)
            negs, n_from_text = draw_negatives(rng, eval_uids[sl], m, forbidden, pop_cdf, nb, n_text)
            if protocol == "binary":
                out[protocol].append(binary_set(eval_uids[sl], eval_pos[sl], negs))
            else:
                out[protocol].append(candidate_sets(eval_uids[sl], eval_pos[sl], negs, n_from_text, rng))
    return {p: pa.concat_tables(ts) for p, ts in out.items()}


def recent_items(uids: np.ndarray, iids: np.ndarray, users: np.ndarray, h: int) -> np.ndarray:
    """[len(users), h]: each user's last h items of (uids, iids), oldest first, -1 padded on the
    left. Rows must be in time order within a user (pipeline.data.split writes them so)."""
    order = np.argsort(uids, kind="stable")
    su, si = np.asarray(uids)[order], np.asarray(iids)[order]
    if len(si) == 0:
        return np.full((len(users), h), -1, dtype=np.int64)
    lo, hi = np.searchsorted(su, users, side="left"), np.searchsorted(su, users, side="right")
    idx = hi[:, None] - h + np.arange(h)[None, :]
    return np.where(idx >= lo[:, None], si[np.clip(idx, 0, len(si) - 1)], -1).astype(np.int64)


def history_pool(anchors: np.ndarray, neighbours: Callable[[np.ndarray], np.ndarray], pool: int) -> np.ndarray:
    """The text pool of each row's anchor items: their nearest titles taken round-robin (the
    nearest of every anchor, newest anchor first, then the second nearest, ...), duplicates
    dropped, cut at `pool` items; [rows, pool], -1 padded. `neighbours(items)` -> [n, pool]."""
    rows, h = anchors.shape
    nb = np.full((rows, h, pool), -1, dtype=np.int64)
    has = anchors >= 0
    if has.any():
        nb[has] = neighbours(anchors[has])
    flat = nb[:, ::-1, :].transpose(0, 2, 1).reshape(rows, h * pool)  # rank-major, newest anchor first
    keep = (flat >= 0) & _first_in_row(flat)
    keep &= np.cumsum(keep, axis=1) <= pool
    order = np.argsort(~keep, axis=1, kind="stable")[:, :pool]  # kept entries first, in pool order
    return np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(flat, order, axis=1), -1)


def text_vectors(titles: list[str], cfg: NegativesConfig):
    from pipeline.data import textsim

    if cfg.text_backend == "tfidf":
        return textsim.tfidf_vectors(titles)
    from pipeline.data.download import fetch_model_asset

    return textsim.minilm_vectors(titles, fetch_model_asset("all-minilm-l6-v2"))


def make_all(splits: dict[str, pa.Table], titles: list[str], cfg: NegativesConfig,
             vectors=None) -> tuple[dict[str, pa.Table], dict]:
    """Candidate sets for valid and test: {'<split>_<protocol>': table}, plus stats.

    `vectors` (item text vectors, row = iid) may be passed in; otherwise built per cfg.
    The text pool is anchored per cfg.text_anchor (module docstring)."""
    from pipeline.data.textsim import topk_neighbors

    n_items = len(titles)
    all_u = np.concatenate([np.asarray(splits[s]["uid"]) for s in ("train", "valid", "test")])
    all_i = np.concatenate([np.asarray(splits[s]["iid"]) for s in ("train", "valid", "test")])
    forbidden = Forbidden(all_u, all_i, n_items)
    train_u, train_i = (np.asarray(splits["train"][c]).astype(np.int64) for c in ("uid", "iid"))
    pop_cdf = popularity_weights(train_i, n_items, cfg.popularity_alpha)
    eval_uids = {s: np.asarray(splits[s]["uid"]).astype(np.int64) for s in ("valid", "test")}
    eval_pos = {s: np.asarray(splits[s]["iid"]).astype(np.int64) for s in ("valid", "test")}
    anchors = {s: (eval_pos[s][:, None] if cfg.text_anchor == "positive"
                   else recent_items(train_u, train_i, eval_uids[s], cfg.text_history)) for s in eval_pos}
    pool_of: dict[str, Callable[[slice], np.ndarray] | None] = {s: None for s in eval_pos}
    if cfg.text_fraction > 0:
        if vectors is None:
            vectors = text_vectors(titles, cfg)
        uniq = np.unique(np.concatenate([a[a >= 0] for a in anchors.values()]))
        nb = topk_neighbors(vectors, uniq, cfg.text_pool) if len(uniq) else np.zeros((0, cfg.text_pool), np.int64)
        neighbours = lambda items: nb[np.searchsorted(uniq, items)]  # noqa: E731
        for s in eval_pos:
            pool_of[s] = lambda sl, a=anchors[s]: history_pool(a[sl], neighbours, cfg.text_pool)
    tables: dict[str, pa.Table] = {}
    stats: dict = {"text_anchor": cfg.text_anchor}
    for split_index, name in enumerate(("valid", "test")):
        uids = eval_uids[name]
        sets = build_sets(name, split_index, uids, eval_pos[name], forbidden, pop_cdf, pool_of[name], cfg)
        for protocol, table in sets.items():
            tables[f"{name}_{protocol}"] = table
            entry = {"users": len(uids), "rows": table.num_rows}
            if "n_text_negatives" in table.column_names:
                entry["mean_text_negatives"] = float(np.mean(table["n_text_negatives"])) if len(uids) else 0.0
            stats[f"{name}_{protocol}"] = entry
    return tables, stats
