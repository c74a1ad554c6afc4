"""Score a domain model on every protocol with pipeline.metrics, on the shared Parquet sets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline import metrics, paths
from pipeline.models.base import DomainModel
from pipeline.models.data import Interactions
from pipeline.split import SPLITS


@dataclass
class EvalSets:
    """Everything evaluation reads for one dataset: splits and candidate sets."""

    n_users: int
    n_items: int
    splits: dict[str, pa.Table]
    candidates: dict[str, pa.Table]  # "<split>_<protocol>" -> table

    @classmethod
    def load(cls, ds: str, candidates: bool = True) -> "EvalSets":
        """Splits of `ds`, and its candidate sets unless `candidates=False` (training needs
        only the splits, so it does not depend on the negatives stage)."""
        splits = {s: pq.read_table(paths.split(ds) / f"{s}.parquet") for s in SPLITS}
        cands = ({p.stem: pq.read_table(p) for p in sorted(Path(paths.negatives(ds)).glob("*.parquet"))}
                 if candidates else {})
        n_users = len(pq.read_table(paths.kcore(ds) / "users.parquet", columns=["uid"]))
        n_items = len(pq.read_table(paths.kcore(ds) / "items.parquet", columns=["iid"]))
        return cls(n_users, n_items, splits, cands)

    def train(self) -> Interactions:
        return Interactions.from_table(self.splits["train"], self.n_users, self.n_items)

    def history(self, split: str, max_len: int = 200) -> torch.Tensor:
        """What a model may condition on when predicting `split`: train, plus valid for test."""
        extra = None
        if split == "test":
            v = self.splits["valid"]
            extra = dict(zip(v["uid"].to_pylist(), v["iid"].to_pylist()))
        return torch.from_numpy(self.train().last_items(max_len, extra))

    def restrict(self, users: np.ndarray) -> "EvalSets":
        """The valid/test splits and candidate sets of `users` only (train stays whole: it is
        what the models condition on), e.g. to score a domain model on the LLM's user subset."""
        keep = pa.array(np.asarray(users), pa.int32())
        pick = lambda t: t.filter(pc.is_in(t["uid"], value_set=keep))  # noqa: E731
        return EvalSets(self.n_users, self.n_items,
                        {s: t if s == "train" else pick(t) for s, t in self.splits.items()},
                        {k: pick(t) for k, t in self.candidates.items()})

    def known(self, split: str):
        parts = [self.splits["train"]] + ([self.splits["valid"]] if split == "test" else [])
        return metrics.known_items(self.n_users, self.n_items, *parts)


def user_subset(test: pa.Table, max_users: int | None, seed: int) -> np.ndarray:
    """The seeded subset of test users every LLM row is scored on (evaluate_llm.max_users /
    seed), drawn from the users of `test` (the test prompts): domain models are scored on it
    too, so Table 3 compares every row on the same users."""
    users = np.unique(test["uid"].to_numpy())
    users = users[users >= 0]
    if max_users is None or max_users >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))


def _ids(a: np.ndarray) -> torch.Tensor:
    """int64 tensor from ids (Arrow hands out read-only arrays, which torch will not wrap)."""
    return torch.tensor(a, dtype=torch.long)


def _scores(model: DomainModel, users: np.ndarray, items: np.ndarray, batch: int = 1024) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(users), batch):
            out.append(model.score(_ids(users[s:s + batch]), _ids(items[s:s + batch])).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, items.shape[1]))


def retrieval(model: DomainModel, ev: EvalSets, split: str, ks=metrics.RETRIEVAL_KS) -> dict:
    t = ev.splits[split]
    model.set_history(ev.history(split))
    with torch.no_grad():
        return metrics.retrieval_metrics(
            lambda u: model.score_all(_ids(u)).float().numpy(),
            t["uid"].to_numpy(), t["iid"].to_numpy(), ev.known(split), ks)


def valid_score(model: DomainModel, ev: EvalSets) -> float:
    """What early stopping maximises: valid NDCG@10 over all items, or -RMSE for a model
    that predicts ratings."""
    if getattr(model, "predicts_ratings", False):
        t = ev.splits["valid"]
        with torch.no_grad():
            pred = model.predict(_ids(t["uid"].to_numpy()), _ids(t["iid"].to_numpy())).numpy()
        return -metrics.rating_metrics(np.clip(pred, 1, 5), t["rating"].to_numpy())["RMSE"]
    return retrieval(model, ev, "valid", ks=(10,))["NDCG@10"]


def evaluate(model: DomainModel, ev: EvalSets) -> dict:
    """All protocols on test (and the valid ones needed to fix the binary threshold)."""
    model.eval()
    out: dict[str, dict] = {"retrieval": retrieval(model, ev, "test")}
    for protocol, ks in (("topk", (1, 2, 5, 10)), ("ranking", (1, 5, 10))):
        t = ev.candidates[f"test_{protocol}"]
        cands = np.stack(t["candidates"].to_numpy(zero_copy_only=False)).astype(np.int64)
        out[protocol] = metrics.candidate_metrics(_scores(model, t["uid"].to_numpy(), cands),
                                                  t["label_index"].to_numpy(), ks)
    bin_scores = {}
    for split in ("valid", "test"):
        model.set_history(ev.history(split))
        t = ev.candidates[f"{split}_binary"]
        bin_scores[split] = (_scores(model, t["uid"].to_numpy(), t["iid"].to_numpy()[:, None])[:, 0],
                             t["label"].to_numpy())
    threshold = metrics.best_threshold(*bin_scores["valid"])
    out["binary"] = metrics.binary_metrics(*bin_scores["test"], threshold)
    if getattr(model, "predicts_ratings", False):
        t = ev.splits["test"]
        with torch.no_grad():
            pred = model.predict(_ids(t["uid"].to_numpy()), _ids(t["iid"].to_numpy())).numpy()
        out["rating"] = metrics.rating_metrics(np.clip(pred, 1, 5), t["rating"].to_numpy())
    return out
