"""The paired tests and the claims read off them (pipeline.eval.report.paired_tests, claims),
checked against hand-computed McNemar p-values, Holm adjustments and intervals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.eval.report.build import build_report
from pipeline.eval.report.inputs import collect
from pipeline.eval.report.markdown import markdown_report
from pipeline.eval.report.paired_tests import per_user
from tests.report_data import DS, outcomes, write_inputs


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return write_inputs(tmp_path_factory.mktemp("built") / "data")


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


def test_per_user_outcomes_for_the_paired_tests():
    """HR@k as 0/1 hits (McNemar), NDCG@k as reals (paired bootstrap), NaN for a user with no row."""
    t = outcomes({0}, users=np.arange(3))  # top-K ranks 0, 3, 3
    assert per_user(t, "topk", "HR@1", np.array([1, 0])).tolist() == [0.0, 1.0]
    got = per_user(t, "topk", "NDCG@10", np.array([1, 0, 5]))
    assert got[:2] == pytest.approx([1 / np.log2(5), 1.0]) and np.isnan(got[2])
