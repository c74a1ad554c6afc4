"""The report stage: BDLM Table 3 / ablations / Table 4 / lambda sweep / Cao et al. tables, the
give-away flag, the markdown, the plot data and the stage's files, from the metrics + outcome files
of tests/report_data.py (the real writer on tiny synthetic per-user outcomes), checked against
hand-computed values. The paired tests, the input checks and the baseline table have their own
test_report_*.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.eval.report.build import build_report
from pipeline.eval.report.inputs import collect
from pipeline.eval.report.lambda_sweep import lambda_curve
from pipeline.eval.report.markdown import markdown_report
from pipeline.eval.report.tables import table3
from stages.report import write_report
from tests.helpers import REPO
from tests.report_data import DS, giveaway, joint, put


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
