"""Score a domain model on every protocol with pipeline.eval.metrics, on the shared Parquet sets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline.eval import metrics

from pipeline import paths
from pipeline.models.base import DomainModel
from pipeline.models.data import Interactions
from pipeline.data.split import SPLITS


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
    seed), drawn from the users of `test` (the test split: a function of the split alone, so
    the domain models need no prompts to be scored on it)."""
    users = np.unique(test["uid"].to_numpy())
    users = users[users >= 0]
    if max_users is None or max_users >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))


def llm_users(params: dict, ev: "EvalSets") -> np.ndarray:
    """The LLM user subset of params.yaml (evaluate_llm.max_users / seed) for `ev`'s test split."""
    from pipeline.config.params import get, section

    sec = section(params, "evaluate_llm")
    return user_subset(ev.splits["test"], get(sec, "max_users", (int, type(None)), "evaluate_llm"),
                       get(sec, "seed", int, "evaluate_llm"))


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


def valid_score(model: DomainModel, ev: EvalSets, k: int = 10) -> float:
    """What early stopping maximises: valid NDCG@k over all items (domain.train.valid_k), or
    -RMSE for a model that predicts ratings."""
    if getattr(model, "predicts_ratings", False):
        t = ev.splits["valid"]
        with torch.no_grad():
            pred = model.predict(_ids(t["uid"].to_numpy()), _ids(t["iid"].to_numpy())).numpy()
        return -metrics.rating_metrics(np.clip(pred, 1, 5), t["rating"].to_numpy())["RMSE"]
    return retrieval(model, ev, "valid", ks=(k,))[f"NDCG@{k}"]


def outcomes(model: DomainModel, ev: EvalSets) -> pa.Table:
    """The domain model's per-user outcomes on every protocol (pipeline.eval.metrics.Outcomes): test
    sets, plus the valid binary set that fixes the threshold. `metrics.summarize` turns them
    into metrics with intervals for any user set."""
    model.eval()
    out = metrics.Outcomes()
    t = ev.splits["test"]
    model.set_history(ev.history("test"))
    with torch.no_grad():
        masked, unmasked = metrics.retrieval_ranks(lambda u: model.score_all(_ids(u)).float().numpy(),
                                                   t["uid"].to_numpy(), t["iid"].to_numpy(), ev.known("test"))
    out.ranks("retrieval", t["uid"].to_numpy(), masked)
    out.ranks("retrieval_unmasked", t["uid"].to_numpy(), unmasked)
    for protocol in ("topk", "ranking"):
        c = ev.candidates[f"test_{protocol}"]
        cands = metrics.candidate_matrix(c)
        out.candidates(protocol, c["uid"].to_numpy(), _scores(model, c["uid"].to_numpy(), cands),
                       c["label_index"].to_numpy())
    for split in ("valid", "test"):
        model.set_history(ev.history(split))
        c = ev.candidates[f"{split}_binary"]
        s = _scores(model, c["uid"].to_numpy(), c["iid"].to_numpy()[:, None])[:, 0]
        out.binary(split, c["uid"].to_numpy(), c["label"].to_numpy(), s)
    model.set_history(ev.history("test"))
    if getattr(model, "predicts_ratings", False):
        with torch.no_grad():
            pred = model.predict(_ids(t["uid"].to_numpy()), _ids(t["iid"].to_numpy())).numpy()
        out.rating(t["uid"].to_numpy(), t["rating"].to_numpy(), np.clip(pred, 1, 5))
    return out.table()


def evaluate(model: DomainModel, ev: EvalSets, cfg: metrics.StatsConfig = metrics.StatsConfig()) -> dict:
    """All protocols on test, with intervals (the valid binary set fixes the threshold)."""
    return metrics.summarize(outcomes(model, ev), None, cfg)


# Metrics files carry intervals ("ci") from schema 2 on; the report refuses older files.
METRICS_SCHEMA = 2


def stats_config(params: dict) -> metrics.StatsConfig:
    """params.yaml `evaluation`: the intervals' level and bootstrap size, the bootstrap seed
    (their ranges are the config layer's, checked when the file is loaded)."""
    from pipeline.config.params import get, section

    sec = section(params, "evaluation")
    return metrics.StatsConfig(confidence=float(get(sec, "confidence", (int, float), "evaluation")),
                               bootstrap_samples=get(sec, "bootstrap_samples", int, "evaluation"),
                               seed=get(sec, "seed", int, "evaluation"))


def json_safe(obj):
    """NaN/inf (e.g. AUC of a one-class set) as null: bare NaN is not JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_scores(table: pa.Table, cfg: metrics.StatsConfig, header: dict, metrics_path: Path,
                 outcomes_path: Path, subsets: dict[str, np.ndarray] | None = None) -> dict:
    """The one writer of a scored row: its per-user outcomes (Parquet, for paired tests) and its
    metrics with intervals (JSON), on all users in `table` and on each named user subset."""
    from pipeline.artifacts import write_json, write_parquet

    summary = {**header, "schema": METRICS_SCHEMA, **metrics.summarize(table, None, cfg),
               "confidence": cfg.confidence}
    for name, users in (subsets or {}).items():
        summary[name] = metrics.summarize(table, np.asarray(users), cfg)
    summary = json_safe(summary)
    write_parquet(table, outcomes_path)
    write_json(summary, metrics_path)
    return summary
