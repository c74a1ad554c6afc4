"""Vectorised negative sampling for training: uniform items the user has not interacted with."""
from __future__ import annotations

import numpy as np

from pipeline.models.data import Interactions


class SeenPairs:
    """Membership test for (user, item) pairs of the train split, via sorted int64 keys."""

    def __init__(self, data: Interactions):
        self.n_items = data.n_items
        self.keys = np.unique(data.uids * data.n_items + data.iids)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        idx = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[idx] == keys


def uniform_negatives(rng: np.random.Generator, users: np.ndarray, seen: SeenPairs,
                      max_rounds: int = 100) -> np.ndarray:
    """One item per user drawn uniformly among items the user has not seen in train."""
    neg = rng.integers(0, seen.n_items, len(users))
    bad = np.flatnonzero(seen.contains(users, neg))
    for _ in range(max_rounds):
        if len(bad) == 0:
            break
        neg[bad] = rng.integers(0, seen.n_items, len(bad))
        bad = bad[seen.contains(users[bad], neg[bad])]
    return neg


def epoch_order(rng: np.random.Generator, n: int, batch_size: int):
    """Shuffled index batches covering 0..n-1 once."""
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]
