"""The report stage: BDLM Table 3 / ablations / Table 4 / lambda sweep / Cao et al. tables from
metrics JSONs built here for a fake dataset, checked against hand-computed values."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.report import build_report, collect, lambda_curve, markdown_report, table3
from stages.report import write_report
from tests.conftest import REPO

DS = "fake"


def topk(h1, h2):
    return {"HR@1": h1, "HR@2": h2, "HR@5": 0.9, "HR@10": 1.0, "NDCG@5": 0.5, "NDCG@10": 0.55}


def binary(p, r, f):
    return {"precision": p, "recall": r, "f1": f, "threshold": 0.5}


# Four of the eight Table 3 domain models; gru4rec, bert4rec, mostpop, itemknn are missing.
DOMAIN = {"ncf": (0.25, 0.40, 0.70, 0.60, 0.65), "gmf": (0.20, 0.35, 0.60, 0.50, 0.55),
          "sasrec": (0.32, 0.48, 0.72, 0.64, 0.68), "lightgcn": (0.28, 0.44, 0.74, 0.70, 0.72)}


def put(data: Path, kind: str, name: str, obj) -> Path:
    f = data / "metrics" / kind / DS / f"{name}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return f


def side(h1, h2, p, r, f, **extra):
    return {"topk": topk(h1, h2), "binary": binary(p, r, f), **extra}


@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    (d / "metrics" / "split").mkdir(parents=True)
    (d / "metrics" / "split" / f"{DS}.json").write_text(json.dumps({"evaluated_users": 200}))
    for m, v in DOMAIN.items():
        ret = {"Recall@5": 0.05, "NDCG@5": 0.03, "Recall@10": 0.1, "NDCG@10": 0.04}
        extra = {"retrieval": ret} if m == "lightgcn" else {}
        put(d, "domain", m, {"dataset": DS, "model": m, **side(*v, **extra)})
        put(d, "pretrain", m, {"train_seconds": 12.0, "history": [{"epoch": 1, "loss": 0.5}]})
    put(d, "domain", "mf_rating", {"model": "mf_rating", **side(0.1, 0.2, 0.5, 0.5, 0.5),
                                   "rating": {"RMSE": 0.95, "MAE": 0.75}})
    put(d, "llm", "full", {"dataset": DS, "variant": "full", "vocab": "pe", "users_scored": 50,
                           **side(0.30, 0.45, 0.80, 0.50, 0.62, ranking={"HR@1": 0.2, "NDCG@10": 0.3}),
                           "prompts_truncated": 0, "eval_seconds": 3.0})
    put(d, "llm", "no_et", {"variant": "no_et", "vocab": "text", "users_scored": 50,
                            **side(0.10, 0.20, 0.55, 0.40, 0.46, ranking={"HR@1": 0.1}),
                            "not_computed": {"retrieval": "ids as plain text"}})
    put(d, "sft", "full", {"history": [{"step": 1, "loss": 3.0, "lr": 1e-4}, {"step": 2, "loss": 2.0, "lr": 1e-4}],
                           "train_seconds": 60.0})
    put(d, "sft", "no_et", {"history": [{"step": 1, "loss": 4.0, "lr": 1e-4}], "train_seconds": 30.0})
    put(d, "joint_train", "bdlm", {"train_seconds": 90.0, "lambda": 0.01,
                                   "history": [{"step": 1, "llm_loss": 2.5, "drs_loss": 0.7}]})
    put(d, "joint", "bdlm", {"dataset": DS, "experiment": "bdlm", "domain_model": "lightgcn", "lambda": 0.01,
                             "users_scored": 50, "llm": side(0.36, 0.50, 0.78, 0.66, 0.715),
                             "drs": side(0.40, 0.55, 0.75, 0.72, 0.735)})
    put(d, "joint", "lambda_0", {"experiment": "lambda_0", "lambda": 0.0, "users_scored": 50,
                                 "llm": side(0.31, 0.4, 0.7, 0.6, 0.64), "drs": side(0.29, 0.4, 0.7, 0.6, 0.66)})
    put(d, "joint", "lambda_0.1", {"experiment": "lambda_0.1", "users_scored": 50,  # lambda only in the name
                                   "llm": side(0.33, 0.4, 0.7, 0.6, 0.69), "drs": side(0.38, 0.4, 0.7, 0.6, 0.70)})
    return d


def test_table3_rows_columns_and_improvement(data):
    t3 = table3(collect(data, DS))
    assert t3["columns"] == ["HR@1", "HR@2", "prec", "rec", "f1"]
    assert [r["model"] for r in t3["rows"]] == ["NCF", "GMF", "SASRec", "GRU4Rec", "BERT4Rec", "LGCN", "MostPop",
                                               "ItemKNN", "LLM-only SFT", "BDLM-llm", "BDLM-drs"]
    rows = {r["model"]: r for r in t3["rows"]}
    assert [rows["SASRec"][c] for c in t3["columns"]] == [0.32, 0.48, 0.72, 0.64, 0.68]
    assert [rows["BDLM-drs"][c] for c in t3["columns"]] == [0.40, 0.55, 0.75, 0.72, 0.735]
    assert rows["LGCN"]["source"] == f"data/metrics/domain/{DS}/lightgcn.json"
    assert (rows["NCF"]["users_scored"], rows["NCF"]["all_users"]) == (200, True)
    assert (rows["LLM-only SFT"]["users_scored"], rows["BDLM-llm"]["users_scored"]) == (50, 50)
    assert not rows["GRU4Rec"]["present"] and rows["GRU4Rec"]["HR@1"] is None
    # best BDLM vs best baseline (LLM-only SFT counts as a baseline, as InstructRec in the paper):
    # HR@1 .40 vs SASRec .32; HR@2 .55 vs .48; prec .78 vs LLM .80; rec .72 vs LGCN .70; f1 .735 vs .72
    want = {"HR@1": 25.0, "HR@2": 100 * 0.07 / 0.48, "prec": -2.5, "rec": 100 * 0.02 / 0.70, "f1": 100 * 0.015 / 0.72}
    assert t3["improvement"] == pytest.approx(want)


def test_markdown_table3(data):
    md = markdown_report(build_report(collect(data, DS), ["full", "no_et"]))
    lines = md.splitlines()
    head = lines.index("| Models | HR@1 | HR@2 | prec | rec | f1 | users scored |")
    table = lines[head:head + 14]
    assert table[2] == "| NCF | 0.250 | 0.400 | 0.700 | 0.600 | 0.650 | 200 (all) |"
    assert table[5] == "| GRU4Rec | - | - | - | - | - | missing |"
    assert table[7] == "| LGCN | 0.280 | 0.440 | 0.740 | 0.700 | 0.720 | 200 (all) |"
    assert table[10] == "| LLM-only SFT | 0.300 | 0.450 | **0.800** | 0.500 | 0.620 | 50 |"
    assert table[12] == "| BDLM-drs | **0.400** | **0.550** | 0.750 | **0.720** | **0.735** | 50 |"
    assert table[13] == "| (Improv.) | (+25.0%) | (+14.6%) | (-2.5%) | (+2.9%) | (+2.1%) | |"
    assert "only approximate" in md and "every test user (200)" in md and "subset of test users (50" in md
    assert "dvc plots show" in md
    assert f"- `data/metrics/domain/{DS}/gru4rec.json`: add `gru4rec` to `domain.models`" in md
    assert f"- `data/metrics/llm/{DS}/no_pe.json`: add `no_pe` to `llm.variants`" in md
    assert "`dvc exp run -S 'joint.experiments=[bdlm,wo_jl,lambda_1e-3" not in md  # the sweep has points here
    assert "| sft | full | 60 | 2 | 2.0000 |" in md
    assert "| joint_train | bdlm | 90 | 1 | llm_loss 2.5, drs_loss 0.7 |" in md  # 4 significant digits: ML losses are ~1e-5


def test_other_tables_and_plot_data(data):
    rep = build_report(collect(data, DS), ["full", "no_aux", "no_et"])
    abl = {r["model"]: r for r in rep["ablation"]["rows"]}
    assert list(abl) == ["BDLM", "w/o JL", "w/o PE", "w/o ET", "w/o aux", "LLM-only SFT"]
    assert abl["BDLM"]["HR@1"] == 0.36 and abl["w/o ET"]["f1"] == 0.46 and not abl["w/o JL"]["present"]
    assert rep["plots"]["ablation"] == [{"variant": "BDLM", "HR@1": 0.36, "f1": 0.715},
                                        {"variant": "w/o ET", "HR@1": 0.10, "f1": 0.46},
                                        {"variant": "LLM-only SFT", "HR@1": 0.30, "f1": 0.62}]
    t4 = rep["table4"]
    assert [r["model"] for r in t4["rows"]] == ["NCF", "BDLM-NCF-llm", "BDLM-NCF-drs"]
    assert t4["improvement"] == {c: None for c in t4["columns"]}  # no joint ncf experiment yet
    assert [(p["lambda"], p["side"], p["HR@1"], p["f1"]) for p in rep["lambda"]] == [
        (0.0, "llm", 0.31, 0.64), (0.0, "drs", 0.29, 0.66), (0.01, "llm", 0.36, 0.715), (0.01, "drs", 0.40, 0.735),
        (0.1, "llm", 0.33, 0.69), (0.1, "drs", 0.38, 0.70)]
    assert rep["plots"]["lambda"][1] == {"lambda": 0.01, "HR@1 llm": 0.36, "f1 llm": 0.715,
                                         "HR@1 drs": 0.40, "f1 drs": 0.735}
    assert rep["plots"]["sft_loss"] == [{"step": 1, "full": 3.0, "no_aux": None, "no_et": 4.0},
                                        {"step": 2, "full": 2.0, "no_aux": None, "no_et": None}]
    cao = {r["model"]: r for r in rep["cao"]["rows"]}
    assert cao["LGCN"]["retrieval/NDCG@10"] == 0.04 and cao["MF (rating)"]["rating/RMSE"] == 0.95
    assert cao["LLM SFT full"]["ranking/HR@1"] == 0.2 and cao["LLM SFT full"]["users_scored"] == 50
    assert "NCF" not in cao  # no Cao et al. protocol in its file
    assert cao["LLM SFT no_et"]["not_computed"] == {"retrieval": "ids as plain text"}


def test_missing_inputs_are_listed_not_fatal(data, tmp_path):
    rep = build_report(collect(data, DS))
    for name in ("domain/fake/gru4rec", "domain/fake/itemknn", "llm/fake/no_pe", "llm/fake/no_aux",
                 "joint/fake/wo_jl", "joint/fake/ncf"):
        assert f"data/metrics/{name}.json" in rep["missing"]
    assert f"data/metrics/domain/{DS}/ncf.json" not in rep["missing"]
    # nothing at all: every file still written, every table row present and marked missing
    empty = tmp_path / "empty"
    rep = write_report(DS, ["full"], empty)
    md = (empty / "reports" / DS / "report.md").read_text()
    assert "| BDLM-drs | - | - | - | - | - | missing |" in md and "No λ sweep yet" in md
    assert f"- `data/metrics/llm/{DS}/full.json`" in md
    assert json.loads((empty / "reports/plots/ablation" / f"{DS}.json").read_text()) == []
    assert json.loads((empty / "reports/plots/lambda" / f"{DS}.json").read_text()) == []
    assert json.loads((empty / "reports" / DS / "report.json").read_text())["table3"]["improvement"]["HR@1"] is None


@pytest.mark.parametrize("kind,name,content,match", [
    ("llm", "full", "{not json", r"llm/fake/full\.json: not a readable JSON"),
    ("domain", "ncf", {"topk": {"HR@1": "0.3"}}, r"domain/fake/ncf\.json: 'topk\.HR@1' is '0\.3', not a number"),
    ("domain", "gmf", [1, 2], r"domain/fake/gmf\.json: expected a JSON object, got list"),
    ("joint", "bdlm", {"llm": side(0.1, 0.2, 0.3, 0.4, 0.5)}, r"joint/fake/bdlm\.json: joint metrics need an 'drs'"),
    ("joint", "wo_jl", {"llm": {}, "drs": {"binary": 3}}, r"joint/fake/wo_jl\.json \[drs\]: 'binary' should map"),
    ("llm", "no_pe", {"users_scored": "all"}, r"llm/fake/no_pe\.json: 'users_scored' is 'all'"),
    ("sft", "full", {"history": {"step": 1}}, r"sft/fake/full\.json: 'history' should be a list"),
])
def test_malformed_metrics_file_is_named(data, kind, name, content, match):
    put(data, kind, name, content)
    with pytest.raises(PipelineError, match=match):
        collect(data, DS)


def test_stage_cli(data):
    root = data.parent
    (root / "params.yaml").write_text("llm:\n  variants: [full, no_et]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "stages.report", DS], cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| (Improv.) | (+25.0%)" in res.stdout
    for f in (f"reports/{DS}/report.md", f"reports/{DS}/report.json", f"reports/plots/ablation/{DS}.json",
              f"reports/plots/lambda/{DS}.json", f"reports/plots/sft_loss/{DS}.json"):
        assert (data / f).exists(), f
    put(data, "joint", "ncf", "[")
    res = subprocess.run([sys.executable, "-m", "stages.report", DS], cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "error: data/metrics/joint/fake/ncf.json: not a readable JSON" in res.stderr


def test_lambda_curve_takes_wo_jl_as_its_zero_point(data):
    """The default run's bdlm (joint.lambda) and wo_jl (lambda 0) are sweep points, so the
    opt-in sweep need not re-train them; a lambda_0 run, where there is one, wins."""
    put(data, "joint", "wo_jl", {"experiment": "wo_jl", "lambda": 0.0, "users_scored": 50,
                                 "llm": side(0.2, 0.3, 0.7, 0.6, 0.60), "drs": side(0.21, 0.3, 0.7, 0.6, 0.61)})
    curve = lambda_curve(collect(data, DS))
    assert [(p["lambda"], p["experiment"]) for p in curve if p["side"] == "llm"] == [
        (0.0, "lambda_0"), (0.01, "bdlm"), (0.1, "lambda_0.1")]
    (data / "metrics/joint" / DS / "lambda_0.json").unlink()
    curve = lambda_curve(collect(data, DS))
    assert [(p["lambda"], p["experiment"], p["HR@1"]) for p in curve if p["side"] == "drs"] == [
        (0.0, "wo_jl", 0.21), (0.01, "bdlm", 0.40), (0.1, "lambda_0.1", 0.38)]


def test_domain_rows_use_the_llm_user_subset_when_scored_on_it(data):
    """evaluate_domain also scores each model on the LLM rows' users (`llm_users`): Table 3
    then compares every row on the same users, and the improvement row with them."""
    for model, vals in DOMAIN.items():
        put(data, "domain", model, {"model": model, **side(*vals),
                                    "llm_users": {"users_scored": 50, "seed": 1, **side(0.10, 0.2, 0.5, 0.5, 0.5)}})
    put(data, "domain", "sasrec", {"model": "sasrec", **side(*DOMAIN["sasrec"]),
                                   "llm_users": {"users_scored": 50, "seed": 1, **side(0.38, 0.5, 0.6, 0.6, 0.6)}})
    rep = build_report(collect(data, DS), ["full"])
    rows = {r["model"]: r for r in rep["table3"]["rows"]}
    assert (rows["SASRec"]["HR@1"], rows["SASRec"]["users_scored"], rows["SASRec"]["all_users"]) == (0.38, 50, False)
    assert rep["table3"]["improvement"]["HR@1"] == pytest.approx(100 * (0.40 - 0.38) / 0.38)
    md = markdown_report(rep)
    assert "Every row is scored on the same seeded subset of test users (50;" in md
    assert "| SASRec | 0.380 |" in md
    put(data, "domain", "gmf", {"model": "gmf", **side(*DOMAIN["gmf"]), "llm_users": {"topk": {"HR@1": "x"}}})
    with pytest.raises(PipelineError, match=r"gmf\.json \[llm_users\]: 'topk\.HR@1' is 'x'"):
        collect(data, DS)
