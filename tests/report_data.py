"""The report tests' inputs: metrics and outcome files for a fake dataset, written by the real
writer (pipeline.eval.evaluator.write_scores) from tiny synthetic per-user outcomes whose hits are
known by hand, so that every table cell and paired test can be checked against hand-computed values.
Shared by tests/test_report*.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.eval import metrics
from pipeline.eval.evaluator import write_scores

DS = "fake"
CFG = metrics.StatsConfig(confidence=0.95, bootstrap_samples=100, seed=0)
LLM_USERS = np.arange(20)       # the LLM user subset: every LLM / joint row is scored on these
ALL_USERS = np.arange(40)       # the domain models and floors: every test user


def outcomes(hits: set[int], users=LLM_USERS, binary: float | None = None, extra_hits=(), ranking=False,
             retrieval=False, rating=False, seed=0):
    """Per-user outcomes: top-K rank 0 (HR@1 hit) for `hits` and `extra_hits`, rank 3 otherwise;
    with `binary`, a valid and a test interaction set (1 positive + 1 negative per user) whose
    positive scores `binary` above its negative plus noise."""
    rng = np.random.default_rng(seed)
    users = np.asarray(users)
    hit = np.isin(users, list(hits) + list(extra_hits))
    out = metrics.Outcomes()
    out.ranks("topk", users, np.where(hit, 0, 3))
    if ranking:
        out.ranks("ranking", users, np.where(hit, 0, 7))
    if retrieval:
        out.ranks("retrieval", users, np.where(hit, 2, 30))
        out.ranks("retrieval_unmasked", users, np.where(hit, 4, 40))
    if binary is not None:
        for split in ("valid", "test"):
            pos = binary + rng.normal(0, 0.5, len(users))
            neg = rng.normal(0, 0.5, len(users))
            out.binary(split, np.repeat(users, 2), np.tile([1, 0], len(users)), np.column_stack([pos, neg]).ravel())
    if rating:
        out.rating(users, np.full(len(users), 4.0), np.where(hit, 4.0, 3.0))
    return out.table()


def score(data: Path, kind: str, name: str, table, header: dict, subsets=None) -> dict:
    return write_scores(table, CFG, {"dataset": DS, **header}, data / "metrics" / kind / DS / f"{name}.json",
                        data / "outcomes" / kind / DS / f"{name}.parquet", subsets)


def domain(data: Path, name: str, llm_hits: set[int], **kw) -> dict:
    # users 20..39 (outside the LLM subset) all hit: a test that forgot to restrict to the LLM
    # subset would see a different HR@1
    return score(data, "domain", name, outcomes(llm_hits, ALL_USERS, extra_hits=range(20, 40), **kw),
                 {"model": name}, {"llm_users": LLM_USERS})


def joint(data: Path, name: str, lam: float | None, llm: dict, drs: dict) -> None:
    """A joint experiment's file: its two sides scored by write_scores (outcomes <name>-llm/-drs)."""
    sides = {}
    for side, kw in (("llm", llm), ("drs", drs)):
        s = score(data, "joint", f"{name}-{side}", outcomes(**kw), {})
        (data / "metrics" / "joint" / DS / f"{name}-{side}.json").unlink()  # only the joint file is a row
        sides[side] = {k: v for k, v in s.items() if k not in ("dataset", "schema", "confidence")}
    obj = {"dataset": DS, "experiment": name, "domain_model": "lightgcn", "schema": 2, "users_scored": 20, **sides}
    if lam is not None:
        obj["lambda"] = lam
    put(data, "joint", name, obj)


def put(data: Path, kind: str, name: str, obj) -> Path:
    f = data / "metrics" / kind / DS / f"{name}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return f


def giveaway(data: Path, gives_away: bool) -> None:
    hr, low, high = (0.23, 0.2, 0.26) if gives_away else (0.012, 0.007, 0.021)
    rows = [{"set": "test_topk", "scorer": "centrality", "HR@1": hr, "low": low, "high": high, "chance": 0.05,
             "beats_chance": gives_away, "users": 943}]
    flagged = ["centrality on test_topk: HR@1 0.230 [0.200, 0.260] vs chance 0.050"] if gives_away else []
    f = data / "metrics" / "giveaway" / f"{DS}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"dataset": DS, "text_anchor": "positive" if gives_away else "history",
                             "text_backend": "tfidf", "rows": rows, "gives_away": gives_away, "flagged": flagged}))


TEN = set(range(10))


def write_inputs(d: Path) -> Path:
    """Hits on the 20 LLM users (HR@1 = hits / 20): BDLM-llm, BDLM-drs, LLM-only SFT and LGCN
    hit users 0-9 (.50), NCF 0-6 (.35), MostPop 0-1 (.10); gru4rec, bert4rec, itemknn, gmf,
    sasrec, no_pe, no_aux and the NCF joint experiment are missing."""
    (d / "metrics" / "split").mkdir(parents=True)
    (d / "metrics" / "split" / f"{DS}.json").write_text(json.dumps({"evaluated_users": 40}))
    domain(d, "ncf", set(range(7)), binary=1.0)
    domain(d, "lightgcn", TEN, ranking=True, retrieval=True)
    domain(d, "mostpop", {0, 1})
    domain(d, "mf_rating", {0}, rating=True)
    for m in ("ncf", "lightgcn"):
        put(d, "pretrain", m, {"train_seconds": 12.0, "history": [{"epoch": 1, "loss": 0.5}]})
    score(d, "floors", "random", outcomes({3}, ALL_USERS, binary=0.0, ranking=True), {"floor": "random"},
          {"llm_users": LLM_USERS})
    score(d, "floors", "centrality", outcomes(set(), ALL_USERS, ranking=True), {"floor": "centrality"},
          {"llm_users": LLM_USERS})
    s = score(d, "llm", "full", outcomes(TEN, binary=2.0, ranking=True), {"variant": "full", "vocab": "pe"})
    put(d, "llm", "full", {**s, "prompts_truncated": 0, "eval_seconds": 3.0})
    s = score(d, "llm", "no_et", outcomes({0, 1, 2}, ranking=True), {"variant": "no_et", "vocab": "text"})
    put(d, "llm", "no_et", {**s, "not_computed": {"retrieval": "ids as plain text"}})
    put(d, "sft", "full", {"history": [{"step": 1, "loss": 3.0, "lr": 1e-4}, {"step": 2, "loss": 2.0, "lr": 1e-4}],
                           "train_seconds": 60.0,
                           "curve": [{"step": 0, "samples": 0, "valid_topk_HR@1": 0.05},
                                     {"step": 2, "samples": 16, "valid_topk_HR@1": 0.1}]})
    put(d, "sft", "no_et", {"history": [{"step": 1, "loss": 4.0, "lr": 1e-4}], "train_seconds": 30.0})
    put(d, "joint_train", "bdlm", {"train_seconds": 90.0, "lambda": 0.01,
                                   "history": [{"step": 1, "llm_loss": 2.5, "drs_loss": 0.7}]})
    joint(d, "bdlm", 0.01, {"hits": TEN, "binary": 2.0}, {"hits": TEN, "binary": 1.5})
    joint(d, "wo_jl", 0.0, {"hits": set(range(6))}, {"hits": set(range(5))})
    joint(d, "wo_et", 0.01, {"hits": {0, 1}}, {"hits": set(range(4))})
    joint(d, "lambda_1e-1", None, {"hits": set(range(8))}, {"hits": set(range(12))})  # lambda only in the name
    giveaway(d, False)
    return d


# The report tests' inputs, built once per module; loaded as a plugin by tests/conftest.py
# (a test module's own `data`/`built` fixture takes precedence).

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return write_inputs(tmp_path_factory.mktemp("built") / "data")


@pytest.fixture
def data(built, tmp_path) -> Path:
    """A private copy of the built files, for tests that change them."""
    return Path(shutil.copytree(built, tmp_path / "data"))
