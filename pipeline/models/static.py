"""Floors built from counts, no training: MostPop and ItemKNN (item-item cosine)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.errors import PipelineError
from pipeline.models.base import StaticModel
from pipeline.models.data import Interactions


class MostPop(StaticModel):
    """Every user gets the items most interacted with in train."""

    name = "mostpop"

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        self.register_buffer("counts", torch.zeros(n_items))

    def build(self, data: Interactions) -> None:
        self.counts.copy_(torch.from_numpy(data.item_counts().astype(np.float32)))

    def score_all(self, users):
        return self.counts.expand(len(users), -1)

    def tables(self):
        raise PipelineError("mostpop has no user/item embeddings to export")


class ItemKNN(StaticModel):
    """score(u, i) = sum of cosine(i, j) over the user's history j, keeping each item's
    `neighbors` most similar items (Sarwar et al. 2001; the usual shrinkage-free variant)."""

    name = "itemknn"

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        self.k = int(cfg.get("neighbors", 100))
        self.sim: sp.csr_matrix | None = None
        self.history: sp.csr_matrix | None = None

    def build(self, data: Interactions) -> None:
        r = sp.csr_matrix((np.ones(len(data.uids), np.float32), (data.uids, data.iids)),
                          shape=(self.n_users, self.n_items))
        r.data[:] = 1.0
        norms = np.sqrt(np.asarray(r.multiply(r).sum(0)).ravel())
        norms[norms == 0] = 1.0
        rn = r @ sp.diags(1.0 / norms)
        sim = (rn.T @ rn).tocsr()
        sim.setdiag(0)
        sim.eliminate_zeros()
        self.sim = _keep_topk_per_row(sim, self.k)
        self.history = r

    def set_history(self, history: torch.Tensor) -> None:
        h = history.numpy()
        rows, cols = np.nonzero(h >= 0)
        self.history = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, h[rows, cols])),
                                     shape=(self.n_users, self.n_items))

    def score_all(self, users):
        if self.sim is None:
            raise RuntimeError("ItemKNN: call build(train data) before scoring")
        return torch.from_numpy((self.history[users.numpy()] @ self.sim.T).toarray())

    def tables(self):
        raise PipelineError("itemknn has no user/item embeddings to export")


def _keep_topk_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows = []
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        if hi - lo > k:
            top = np.argpartition(-m.data[lo:hi], k - 1)[:k]
            rows.append((np.full(k, r), m.indices[lo:hi][top], m.data[lo:hi][top]))
        else:
            rows.append((np.full(hi - lo, r), m.indices[lo:hi], m.data[lo:hi]))
    r, c, v = (np.concatenate(x) for x in zip(*rows)) if rows else ([], [], [])
    return sp.csr_matrix((v, (r, c)), shape=m.shape)
