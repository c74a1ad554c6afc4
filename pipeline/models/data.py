"""What every domain model trains on: the train split as id arrays and per-user sequences."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Interactions:
    """Train interactions sorted by (uid, timestamp, raw_row): each user's rows are a
    contiguous, time-ordered run, so per-user sequences are slices `offsets[u]:offsets[u+1]`."""

    n_users: int
    n_items: int
    uids: np.ndarray  # int64 [N]
    iids: np.ndarray  # int64 [N]
    ratings: np.ndarray  # float32 [N]
    offsets: np.ndarray  # int64 [n_users + 1]

    @classmethod
    def from_table(cls, table: pa.Table, n_users: int, n_items: int) -> "Interactions":
        cols = {c: table[c].to_numpy() for c in ("uid", "iid", "timestamp", "raw_row")}
        order = np.lexsort((cols["raw_row"], cols["timestamp"], cols["uid"]))
        uids = cols["uid"][order].astype(np.int64)
        ratings = (table["rating"].to_numpy()[order].astype(np.float32) if "rating" in table.column_names
                   else np.ones(len(order), dtype=np.float32))
        offsets = np.searchsorted(uids, np.arange(n_users + 1)).astype(np.int64)
        return cls(n_users, n_items, uids, cols["iid"][order].astype(np.int64), ratings, offsets)

    def sequence(self, u: int) -> np.ndarray:
        return self.iids[self.offsets[u]:self.offsets[u + 1]]

    def last_items(self, max_len: int, extra: dict[int, int] | None = None) -> np.ndarray:
        """[n_users, max_len] most recent items per user, left-padded with -1; `extra` appends
        one more item per user (the valid item, when scoring test)."""
        out = np.full((self.n_users, max_len), -1, dtype=np.int64)
        for u in range(self.n_users):
            seq = self.sequence(u)
            if extra is not None and u in extra:
                seq = np.append(seq, extra[u])
            seq = seq[-max_len:]
            if len(seq):
                out[u, -len(seq):] = seq
        return out

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.iids, minlength=self.n_items)
