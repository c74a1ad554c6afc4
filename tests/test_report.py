"""The report stage: BDLM Table 3 / ablations / Table 4 / lambda sweep / Cao et al. tables, the
give-away flag and the paired tests, from metrics + outcome files written for a fake dataset by
the real writer (pipeline.eval.evaluator.write_scores) from tiny synthetic per-user outcomes, checked
against hand-computed values."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.eval import metrics
from pipeline.errors import PipelineError
from pipeline.eval.evaluator import write_scores
from pipeline.eval.report import build_report, collect, lambda_curve, markdown_report, table3
from stages.report import write_report
from tests.helpers import REPO

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


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Hits on the 20 LLM users (HR@1 = hits / 20): BDLM-llm, BDLM-drs, LLM-only SFT and LGCN
    hit users 0-9 (.50), NCF 0-6 (.35), MostPop 0-1 (.10); gru4rec, bert4rec, itemknn, gmf,
    sasrec, no_pe, no_aux and the NCF joint experiment are missing."""
    d = tmp_path_factory.mktemp("built") / "data"
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


@pytest.fixture
def data(built, tmp_path) -> Path:
    """A private copy of the built files, for tests that change them."""
    return Path(shutil.copytree(built, tmp_path / "data"))


def test_table3_rows_values_intervals_and_improvement(built):
    t3 = table3(collect(built, DS))
    assert t3["columns"] == ["HR@1", "HR@2", "prec", "rec", "f1", "AUC", "acc"]
    assert [r["model"] for r in t3["rows"]] == [
        "NCF", "GMF", "SASRec", "GRU4Rec", "BERT4Rec", "LGCN", "MostPop", "Random", "Centrality (title)",
        "Centrality + pop.", "ItemKNN", "InstructRec-style (text-only SFT)", "LLM-only SFT", "BDLM-llm",
        "BDLM-drs"]
    rows = {r["model"]: r for r in t3["rows"]}
    # domain rows are read on the LLM users (llm_users block): 7 of 20 hits, not 27 of 40
    assert (rows["NCF"]["HR@1"], rows["NCF"]["users_scored"], rows["NCF"]["all_users"]) == (0.35, 20, False)
    assert rows["MostPop"]["HR@1"] == 0.10 and rows["Random"]["HR@1"] == 0.05 and rows["BDLM-drs"]["HR@1"] == 0.5
    assert rows["NCF"]["ci"]["HR@1"] == pytest.approx([0.1812, 0.5671], abs=1e-4)  # Wilson 7/20
    assert rows["NCF"]["AUC"] is not None and rows["NCF"]["ci"]["AUC"] is not None
    assert rows["NCF"]["f1_floor"] == pytest.approx(2 / 3) and t3["f1_floor"] == [pytest.approx(0.6667)]
    assert rows["Centrality (title)"]["present"] and rows["Centrality (title)"]["f1"] is None  # no binary sets
    assert not rows["Centrality + pop."]["present"] and not rows["GRU4Rec"]["present"]
    assert rows["LGCN"]["source"] == f"data/metrics/domain/{DS}/lightgcn.json"
    assert rows["BDLM-drs"]["outcomes"] == f"data/outcomes/joint/{DS}/bdlm-drs.parquet"
    assert t3["users"] == {"counts": {"20": [r["model"] for r in t3["rows"] if r["present"]]}, "same": True}
    # best BDLM HR@1 .50 vs best baseline .50 (LGCN / LLM-only SFT; the floors are not baselines)
    assert t3["improvement"]["HR@1"] == pytest.approx(0.0)


def test_markdown_cells_carry_intervals(built):
    md = markdown_report(build_report(collect(built, DS), ["full", "no_et"]))
    lines = md.splitlines()
    head = lines.index("| Models | HR@1 | HR@2 | prec | rec | f1 | AUC | acc | users scored |")
    table = {ln.split(" | ")[0][2:]: ln for ln in lines[head + 2:head + 18]}
    assert table["NCF"].startswith("| NCF | .350 [.181, .567] | .350 [.181, .567] | ")
    assert table["MostPop"] == "| MostPop | .100 [.028, .301] | .100 [.028, .301] | - | - | - | - | - | 20 |"
    assert table["GRU4Rec"] == "| GRU4Rec | - | - | - | - | - | - | - | missing |"
    assert table["BDLM-llm"].startswith("| BDLM-llm | **.500** [.299, .701] |")
    assert table["(Improv.)"].startswith("| (Improv.) | (+0.0%) |")
    assert "A constant \"Yes\" scores F1 .667 on these interaction sets" in md
    assert "Every row here is scored on the same 20 users." in md
    assert "| 0.01 | llm | .500 [.299, .701] |" in md  # the lambda sweep too
    assert f"- `data/metrics/domain/{DS}/gru4rec.json`: add `gru4rec` to `domain.models`" in md
    assert "| sft | full | 60 | 2 | 2.0000 |" in md
    assert "| joint_train | bdlm | 90 | 1 | llm_loss 2.5, drs_loss 0.7 |" in md


def test_giveaway_flag(data):
    md = markdown_report(build_report(collect(data, DS)))
    top = md.split("## Table 3")[0]
    assert ("The candidate sets do not give the positive away: the text-only scorers are within chance"
            " (test top-K, title centrality: HR@1 .012 [.007, .021], chance .050, n=943)") in top
    assert "**" not in top
    giveaway(data, True)
    rep = build_report(collect(data, DS))
    assert rep["giveaway"]["gives_away"] is True
    assert rep["giveaway"]["flagged"] == ["centrality on test_topk: HR@1 0.230 [0.200, 0.260] vs chance 0.050"]
    md = markdown_report(rep)
    assert md.splitlines()[2].startswith("**The candidate sets give the positive away: centrality on test_topk:"
                                         " HR@1 0.230 [0.200, 0.260] vs chance 0.050.**")
    (data / "metrics" / "giveaway" / f"{DS}.json").unlink()
    rep = build_report(collect(data, DS))
    assert rep["giveaway"]["present"] is False and f"data/metrics/giveaway/{DS}.json" in rep["missing"]
    assert f"`dvc repro evaluate_floors@{DS}`" in markdown_report(rep)


def test_paired_tests_hand_computed(built):
    """Table 3 family, 6 tests run on the 20 LLM users: BDLM-llm vs NCF (b10 = 3, b01 = 0:
    exact p = 2 * .5^3 = .25), vs LGCN and vs LLM-only SFT (no discordant user: p = 1), vs
    MostPop (b10 = 8, b01 = 0: p = 2 * .5^8 = .0078125), vs InstructRec-style (b10 = 7:
    p = 2 * .5^7) and BDLM-drs vs LGCN (p = 1). Holm: MostPop .0078125 * 6 = .046875 < .05,
    significant; NCF max(.25 * 4, ...) = 1, not."""
    rep = build_report(collect(built, DS))
    pt = rep["paired_tests"]
    fam = {(x["a"], x["b"]): x for x in pt["families"]["table3"]}
    assert list(fam) == [("BDLM-llm", "NCF"), ("BDLM-llm", "LGCN"), ("BDLM-llm", "MostPop"),
                         ("BDLM-llm", "InstructRec-style (text-only SFT)"), ("BDLM-llm", "LLM-only SFT"),
                         ("BDLM-drs", "LGCN")]
    most = fam[("BDLM-llm", "MostPop")]
    assert (most["n"], most["method"], most["diff"]) == (20, "mcnemar", pytest.approx(0.4))
    assert most["p"] == pytest.approx(2 * 0.5 ** 8) and most["p_holm"] == pytest.approx(6 * 2 * 0.5 ** 8)
    assert most["significant"] and most["verdict"] == "significant (BDLM-llm above MostPop)"
    ncf = fam[("BDLM-llm", "NCF")]
    assert (ncf["p"], ncf["p_holm"], ncf["significant"]) == (pytest.approx(0.25), 1.0, False)
    assert ncf["verdict"] == "not distinguishable from noise at n=20"
    skipped = {(s["a"], s["b"]) for s in pt["skipped"]}
    assert ("BDLM-llm", "GRU4Rec") in skipped and ("w/o JL (llm)", "w/o ET (llm)") not in skipped
    assert ("w/o JL (llm)", "w/o PE (llm)") in skipped
    abl = {(x["a"], x["b"]): x for x in pt["families"]["ablation"]}
    assert abl[("w/o JL (llm)", "w/o ET (llm)")]["diff"] == pytest.approx(0.2)  # 6 vs 2 hits of 20
    # the claims section reads the same tests
    claims = {c["claim"]: c for c in rep["claims"]}
    assert claims["BDLM-drs > its domain model (LGCN)"]["verdict"] == "not shown"
    assert claims["ablation order on the llm side: BDLM > w/o JL > w/o PE, w/o ET"]["verdict"] == "not shown"
    assert claims["the λ curve rises above λ = 0 (and falls again at the largest λ)"]["verdict"] in (
        "not shown", "supported")
    # domain vs domain: restricted to the LLM subset too (NCF 7 vs MostPop 2 hits of 20: b10 = 5)
    nm = next(x for x in pt["families"]["vs_mostpop"] if x["a"] == "NCF")
    assert (nm["n"], nm["users"], nm["p"]) == (20, "the LLM user subset", pytest.approx(2 * 0.5 ** 5))
    # lambda: each point vs lambda 0 (wo_jl), per side
    assert [(x["a"], x["b"]) for x in pt["families"]["lambda"]] == [
        ("λ=0.01 (llm)", "λ=0 (llm)"), ("λ=0.01 (drs)", "λ=0 (drs)"), ("λ=0.1 (llm)", "λ=0 (llm)"),
        ("λ=0.1 (drs)", "λ=0 (drs)")]
    md = markdown_report(rep)
    section = md.split("## Paired tests")[1].split("## Training")[0]
    # McNemar's interval: diff +- 1.96 * sqrt(b10 + b01 - (b10 - b01)^2 / n) / n
    assert ("| BDLM-llm | MostPop | top-K HR@1 | 20 | +.400 [.185, .615] | .008 | .047 |"
            " significant (BDLM-llm above MostPop) |") in section
    assert "## The paper's BDLM claims, on this run" in md
    assert ("| BDLM-llm | NCF | top-K HR@1 | 20 | +.150 [-.006, .306] | .250 | 1.000 |"
            " not distinguishable from noise at n=20 |") in section
    assert f"- `data/outcomes/domain/{DS}/gru4rec.parquet`: BDLM-llm vs GRU4Rec" in section
    assert json.loads(json.dumps(rep["paired_tests"])) == rep["paired_tests"]  # JSON as is


def test_other_tables_and_plot_data(built):
    rep = build_report(collect(built, DS), ["full", "no_aux", "no_et"])
    abl = {r["model"]: r for r in rep["ablation"]["rows"]}
    assert list(abl) == [f"{s} ({side})" for side in ("llm", "drs") for s in ("BDLM", "w/o JL", "w/o PE", "w/o ET")] + [
        "LLM-only SFT", "w/o aux (SFT)", "w/o PE (SFT)", "+ align loss (SFT, an option)", "Random",
        "Centrality (title)", "Centrality + pop."]
    assert abl["BDLM (llm)"]["HR@1"] == 0.5 and abl["w/o ET (llm)"]["HR@1"] == 0.1 and not abl["w/o PE (llm)"]["present"]
    assert abl["w/o ET (drs)"]["HR@1"] == 0.2
    assert [p["variant"] for p in rep["plots"]["ablation"]] == [
        "BDLM (llm)", "w/o JL (llm)", "w/o ET (llm)", "BDLM (drs)", "w/o JL (drs)", "w/o ET (drs)", "LLM-only SFT"]
    t4 = rep["table4"]
    assert [r["model"] for r in t4["rows"]] == ["NCF", "MostPop", "Random", "Centrality (title)", "Centrality + pop.",
                                               "BDLM-NCF-llm", "BDLM-NCF-drs"]
    assert t4["improvement"] == {c: None for c in t4["columns"]}  # no joint ncf experiment yet
    assert [(p["lambda"], p["side"], p["HR@1"]) for p in rep["lambda"]] == [
        (0.0, "llm", 0.3), (0.0, "drs", 0.25), (0.01, "llm", 0.5), (0.01, "drs", 0.5),
        (0.1, "llm", 0.4), (0.1, "drs", 0.6)]
    assert rep["lambda"][2]["ci"]["HR@1"] == pytest.approx([0.2993, 0.7007], abs=1e-4)
    assert rep["plots"]["lambda"][0] == {"lambda": 0.0, "HR@1 llm": 0.3, "f1 llm": None, "HR@1 drs": 0.25,
                                         "f1 drs": None}
    assert rep["plots"]["sft_loss"] == [{"step": 1, "full": 3.0, "no_aux": None, "no_et": 4.0},
                                        {"step": 2, "full": 2.0, "no_aux": None, "no_et": None}]
    assert rep["plots"]["learning_curve"] == [{"samples": 0, "full": 0.05, "no_aux": None, "no_et": None},
                                              {"samples": 16, "full": 0.1, "no_aux": None, "no_et": None}]
    cao = {r["model"]: r for r in rep["cao"]["rows"]}
    assert cao["LGCN"]["retrieval/Recall@5"] == 0.5 and cao["LGCN"]["ci"]["retrieval/Recall@5"] is not None
    assert cao["MF (rating)"]["rating/RMSE"] == pytest.approx(np.sqrt(19 / 20))
    assert cao["Random"]["ranking/HR@1"] == 0.05 and cao["LLM SFT full"]["users_scored"] == 20
    assert "NCF" not in cao  # no Cao et al. protocol in its file
    assert cao["LLM SFT no_et"]["not_computed"] == {"retrieval": "ids as plain text"}


def test_mixed_user_counts_are_said_plainly(data):
    obj = json.loads((data / "metrics/domain" / DS / "ncf.json").read_text())
    del obj["llm_users"]  # scored on every test user only
    put(data, "domain", "ncf", obj)
    rep = build_report(collect(data, DS))
    assert rep["table3"]["users"]["same"] is False
    md = markdown_report(rep)
    assert "**Rows of this table are scored on different numbers of users** (20 users: LGCN, MostPop," in md
    assert "40 users: NCF (all test users))" in md
    assert "| NCF | **.675** [.520, .799] |" in md and "| 40 (all) |" in md  # Wilson 27/40
    # NCF is now Table 3's best baseline: BDLM-drs is tested against it, on the LLM users only
    last = rep["paired_tests"]["families"]["table3"][-1]
    assert (last["a"], last["b"], last["note"], last["n"]) == ("BDLM-drs", "NCF", "BDLM-llm's best baseline", 20)
    assert "| BDLM-drs | NCF (BDLM-llm's best baseline) | top-K HR@1 | 20 |" in md


def test_missing_inputs_are_listed_not_fatal(built, tmp_path):
    rep = build_report(collect(built, DS))
    for name in ("domain/fake/gru4rec", "domain/fake/itemknn", "joint/fake/wo_pe", "llm/fake/no_aux",
                 "joint/fake/ncf", "floors/fake/centrality_pop"):
        assert f"data/metrics/{name}.json" in rep["missing"]
    assert f"data/metrics/domain/{DS}/ncf.json" not in rep["missing"]
    # nothing at all: every file still written, every table row present and marked missing
    empty = tmp_path / "empty"
    rep = write_report(DS, ["full"], empty)
    md = (empty / "reports" / DS / "report.md").read_text()
    assert "| BDLM-drs | - | - | - | - | - | - | - | missing |" in md and "No λ sweep yet" in md
    assert "| Random | - | - | - | - | - | - | - | missing |" in md
    assert f"- `data/metrics/llm/{DS}/full.json`" in md and "The give-away check has not run" in md
    assert f"- `data/outcomes/joint/{DS}/bdlm-llm.parquet`: BDLM-llm vs NCF" in md
    assert json.loads((empty / "reports/plots/ablation" / f"{DS}.json").read_text()) == []
    saved = json.loads((empty / "reports" / DS / "report.json").read_text())
    assert saved["table3"]["improvement"]["HR@1"] is None and saved["paired_tests"]["families"]["table3"] == []


@pytest.mark.parametrize("kind,name,content,match", [
    ("llm", "full", "{not json", r"llm/fake/full\.json: not a readable JSON"),
    ("domain", "ncf", {"topk": {"HR@1": "0.3"}}, r"domain/fake/ncf\.json: 'topk\.HR@1' is '0\.3', not a number"),
    ("domain", "gmf", [1, 2], r"domain/fake/gmf\.json: expected a JSON object, got list"),
    ("joint", "bdlm", {"llm": {}}, r"joint/fake/bdlm\.json: joint metrics need an 'drs'"),
    ("joint", "wo_jl", {"llm": {}, "drs": {"binary": 3}}, r"joint/fake/wo_jl\.json \[drs\]: 'binary' should map"),
    ("llm", "no_pe", {"users_scored": "all"}, r"llm/fake/no_pe\.json: 'users_scored' is 'all'"),
    ("sft", "full", {"history": {"step": 1}}, r"sft/fake/full\.json: 'history' should be a list"),
    ("floors", "random", {"schema": 2, "ci": {"topk/HR@1": 0.3}}, r"floors/fake/random\.json: 'ci\.topk/HR@1' is 0\.3"),
])
def test_malformed_metrics_file_is_named(data, kind, name, content, match):
    put(data, kind, name, content)
    with pytest.raises(PipelineError, match=match):
        collect(data, DS)


@pytest.mark.parametrize("kind,name,content,match", [
    # the old format: no schema, no intervals
    ("domain", "ncf", {"model": "ncf", "topk": {"HR@1": 0.3}},
     r"domain/fake/ncf\.json: old metrics format \('schema' is None, not 2\).*`dvc repro evaluate_domain@fake-ncf`"),
    ("llm", "full", {"variant": "full", "users_scored": 20, "topk": {"HR@1": 0.3}},
     r"llm/fake/full\.json: old metrics format.*`dvc repro evaluate_llm@fake-full`"),
    ("joint", "bdlm", {"schema": 2, "llm": {"ci": {}}, "drs": {"topk": {"HR@1": 0.3}}},
     r"joint/fake/bdlm\.json: old metrics format \(no intervals \('ci'\) in \[drs\]\).*evaluate_joint@fake-bdlm"),
    ("floors", "centrality", {"schema": 2, "ci": {}, "llm_users": {"topk": {}}},
     r"floors/fake/centrality\.json: old metrics format.*\[llm_users\].*`dvc repro evaluate_floors@fake`"),
])
def test_old_schema_file_names_the_file_and_the_stage(data, kind, name, content, match):
    put(data, kind, name, content)
    with pytest.raises(PipelineError, match=match):
        collect(data, DS)


def test_broken_giveaway_or_outcomes_file_is_named(data):
    (data / "metrics" / "giveaway" / f"{DS}.json").write_text(json.dumps({"gives_away": "no"}))
    with pytest.raises(PipelineError, match=r"giveaway/fake\.json: 'gives_away' is 'no'"):
        collect(data, DS)
    giveaway(data, False)
    (data / "outcomes" / "domain" / DS / "mostpop.parquet").write_text("not parquet")
    with pytest.raises(PipelineError, match=r"outcomes/domain/fake/mostpop\.parquet: not a readable outcomes"):
        build_report(collect(data, DS))


def test_stage_cli(data):
    root = data.parent
    (root / "params.yaml").write_text("llm:\n  variants: [full, no_et]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "stages.report", DS], cwd=root, env=env, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "| (Improv.) | (+0.0%)" in res.stdout and "## Paired tests" in res.stdout
    for f in (f"reports/{DS}/report.md", f"reports/{DS}/report.json", f"reports/plots/ablation/{DS}.json",
              f"reports/plots/lambda/{DS}.json", f"reports/plots/sft_loss/{DS}.json"):
        assert (data / f).exists(), f
    saved = json.loads((data / f"reports/{DS}/report.json").read_text())
    assert saved["giveaway"]["gives_away"] is False and "table3" in saved["paired_tests"]["families"]
    put(data, "joint", "ncf", "[")
    res = subprocess.run([sys.executable, "-m", "stages.report", DS], cwd=root, env=env, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 2 and "error: data/metrics/joint/fake/ncf.json: not a readable JSON" in res.stderr


def test_lambda_curve_prefers_lambda_0_over_wo_jl(data):
    """The default run's bdlm (joint.lambda) and wo_jl (lambda 0) are sweep points, so the
    opt-in sweep need not re-train them; a lambda_0 run, where there is one, wins."""
    joint(data, "lambda_0", 0.0, {"hits": {0}}, {"hits": {0, 1}})
    inp = collect(data, DS)
    curve = lambda_curve(inp)
    assert [(p["lambda"], p["experiment"]) for p in curve if p["side"] == "llm"] == [
        (0.0, "lambda_0"), (0.01, "bdlm"), (0.1, "lambda_1e-1")]
    pt = build_report(inp)["paired_tests"]["families"]["lambda"]
    assert {x["b_outcomes"] for x in pt} == {f"data/outcomes/joint/{DS}/lambda_0-llm.parquet",
                                              f"data/outcomes/joint/{DS}/lambda_0-drs.parquet"}


def test_baselines_table_all_users_with_floors(data, monkeypatch):
    """stage baselines: every test user (top-level blocks), intervals, the floors, AUC, masked
    and unmasked retrieval."""
    from pipeline.eval.report import markdown, table_rows
    from stages.baselines import collect_results

    monkeypatch.chdir(data.parent)
    rows = table_rows(collect_results(DS, ["ncf", "lightgcn", "mostpop"]))
    assert [r["model"] for r in rows] == ["NCF", "LGCN", "MostPop", "Random", "Centrality (title)",
                                          "Centrality + pop."]
    assert rows[0]["topk/HR@1"] == 27 / 40 and rows[0]["users_scored"] == 40 and rows[0]["train_seconds"] == 12.0
    assert rows[1]["retrieval/Recall@10"] == 0.75 and rows[1]["retrieval_unmasked/Recall@10"] == 0.75
    assert not rows[5]["present"]
    md = markdown(rows, "t")
    assert "| model | top-K HR@1 | top-K HR@2 | prec | rec | f1 | AUC | masked Recall@10 | masked NDCG@10 |" \
           " unmasked Recall@10 | unmasked NDCG@10 | ranking HR@1 | ranking NDCG@10 | users | train s |" in md
    assert "| NCF | .675 [.520, .799] |" in md and "| Centrality + pop. | - |" in md
    assert f"`data/metrics/floors/{DS}/centrality_pop.json (`dvc repro evaluate_floors@{DS}`)`" in md
    assert "Every row on every test user (40)" in md
    put(data, "domain", "mostpop", {"model": "mostpop", "topk": {"HR@1": 0.1}})
    with pytest.raises(PipelineError, match=r"mostpop\.json: old metrics format.*evaluate_domain@fake-mostpop"):
        collect_results(DS, ["mostpop"])


def test_per_user_outcomes_for_the_paired_tests():
    """HR@k as 0/1 hits (McNemar), NDCG@k as reals (paired bootstrap), NaN for a user with no row."""
    from pipeline.eval.report import per_user

    t = outcomes({0}, users=np.arange(3))  # top-K ranks 0, 3, 3
    assert per_user(t, "topk", "HR@1", np.array([1, 0])).tolist() == [0.0, 1.0]
    got = per_user(t, "topk", "NDCG@10", np.array([1, 0, 5]))
    assert got[:2] == pytest.approx([1 / np.log2(5), 1.0]) and np.isnan(got[2])
