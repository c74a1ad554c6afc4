"""End to end: the real dvc.yaml on a tiny local dataset in a temp dir (dvc init --no-scm)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import tiny_project, write_params
from tests.llm_tiny import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.slow

DATA_STAGES = ["download", "prepare", "kcore", "split", "negatives"]
DOMAIN_STAGES = ["pretrain_domain", "evaluate_domain", "evaluate_floors", "export_embeddings", "baselines"]
LLM_STAGES = ["download_llm", "expand_vocab", "build_prompts", "sft", "evaluate_llm", "joint_train", "evaluate_joint"]
REPORT_STAGES = ["report"]
# check_params re-runs on any change to params.yaml (a second); its output is constant, so it
# makes nothing else stale
STAGES = ["check_params"] + DATA_STAGES + DOMAIN_STAGES + LLM_STAGES + REPORT_STAGES


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def ran(output: str) -> set[str]:
    return {line.split("'")[1].split("@")[0] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    params = tiny_project(root)
    params["domain"]["models"] = ["mostpop", "mf", "lightgcn", "ncf", "sasrec"]
    params["domain"]["export"] = ["lightgcn"]
    params["domain"]["train"].update(epochs=2)
    # the LLM half on a tiny LLaMA saved as a local checkpoint (llm.base may be any path)
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden=16).save_pretrained(root / "tiny-llm")
    tok.save_pretrained(root / "tiny-llm")
    params["llm"].update(base=str(root / "tiny-llm"), vocab_modes=["pe", "text"], variants=["full", "no_et"])
    params["prompts"].update(max_train_users=None, train_targets_per_user=1)
    params["sft"].update(steps=2, batch_size=2, checkpoint_every=1, max_len=128, warmup_steps=1)
    params["evaluate_llm"].update(max_users=5, batch_size=4)
    params["joint"]["train"].update(steps=2, batch_size=2, drs_batch_size=2, drs_pool=4, checkpoint_every=1,
                                    max_len=128)
    params["joint"]["experiments"] = ["bdlm", "wo_jl", "wo_et"]  # wo_pe needs vocab rand, not built here
    for m in params["domain"]["models"]:
        if "epochs" in params["domain"][m]:
            params["domain"][m]["epochs"] = 2
    write_params(root, params)
    dvc(root, "init", "--no-scm", "-q")
    return root


def test_repro_builds_every_stage_then_is_up_to_date(project):
    first = dvc(project, "repro")
    assert ran(first) == set(STAGES)
    d = project / "data"
    for path in ["raw/tiny/checksums.json", "prepared/tiny/interactions.parquet", "prepared/tiny/items.parquet",
                 "kcore/tiny/interactions.parquet", "kcore/tiny/users.parquet", "kcore/tiny/items.parquet",
                 "split/tiny/train.parquet", "split/tiny/valid.parquet", "split/tiny/test.parquet",
                 *[f"negatives/tiny/{s}_{p}.parquet" for s in ("valid", "test") for p in ("topk", "ranking", "binary")],
                 *[f"metrics/{s}/tiny.json" for s in DATA_STAGES[1:]],
                 "embeddings/tiny/lightgcn.safetensors", "reports/tiny/baselines.md",
                 *[f"metrics/domain/tiny/{m}.json" for m in ("mostpop", "mf", "lightgcn", "sasrec")],
                 "llm/base/config.json", "llm/tiny/vocab/pe/vocab.json", "prompts/tiny/tokens/test.parquet",
                 "llm/tiny/sft/full/config.json", "metrics/sft/tiny/full.json",
                 "metrics/llm/tiny/full.json", "metrics/llm/tiny/no_et.json",
                 "metrics/joint/tiny/bdlm.json", "metrics/joint/tiny/wo_jl.json", "joint/tiny/bdlm/drs.safetensors",
                 "metrics/floors/tiny/centrality.json", "metrics/giveaway/tiny.json", "outcomes/llm/tiny/full.parquet",
                 "outcomes/joint/tiny/bdlm-drs.parquet", "outcomes/domain/tiny/mf.parquet",
                 "reports/tiny/report.md", "reports/tiny/report.json", "reports/plots/ablation/tiny.json",
                 "reports/plots/lambda/tiny.json", "reports/plots/sft_loss/tiny.json"]:
        assert (d / path).exists(), path
    again = dvc(project, "repro")
    assert ran(again) == set()
    assert "Data and pipelines are up to date" in again


def test_outputs_are_leak_free(project):
    d = project / "data"
    parts = {s: pq.read_table(d / f"split/tiny/{s}.parquet") for s in ("train", "valid", "test")}
    seen = {(u, i) for t in parts.values() for u, i in zip(t["uid"].to_pylist(), t["iid"].to_pylist())}
    train = set(zip(parts["train"]["uid"].to_pylist(), parts["train"]["iid"].to_pylist()))
    for s in ("valid", "test"):
        held = set(zip(parts[s]["uid"].to_pylist(), parts[s]["iid"].to_pylist()))
        assert held and not held & train
        for row in pq.read_table(d / f"negatives/tiny/{s}_topk.parquet").to_pylist():
            assert [c for c in row["candidates"] if (row["uid"], c) in seen] == [row["pos_iid"]]
            assert (row["uid"], row["pos_iid"]) in held


def test_param_change_reruns_only_dependents(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    before = (project / "data/metrics/kcore/tiny.json").read_text()
    params["kcore"]["item_k"] = 5  # drops items, so everything downstream changes
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc(project, "repro")
    assert ran(out) == set(STAGES) - {"download", "prepare", "download_llm"}
    assert (project / "data/metrics/kcore/tiny.json").read_text() != before
    params["negatives"]["seed"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    # new candidate sets: re-scored and new eval prompts; no domain model is retrained, but the
    # LLMs are: their training top-K sets are drawn by the same sampler (prompts.train_topk_sampler:
    # eval), SFT's learning curve and the DRS's selection read the valid candidate sets
    assert ran(dvc(project, "repro")) == {"check_params", "negatives", "evaluate_domain", "evaluate_floors", "baselines",
                                         "build_prompts", "sft", "evaluate_llm", "joint_train", "evaluate_joint",
                                         "report"}
    params["domain"]["mf"]["dim"] = 8  # one model's params: only that model and the table
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc(project, "repro")
    assert ran(out) == {"check_params", "pretrain_domain", "evaluate_domain", "baselines", "report"}
    assert "Running stage 'pretrain_domain@tiny-mf'" in out
    assert "Running stage 'pretrain_domain@tiny-lightgcn'" not in out
    assert ran(dvc(project, "repro", "split@tiny", "--force", "--single-item")) == {"split"}


def test_exported_embeddings_follow_the_contract(project):
    from safetensors import safe_open

    with safe_open(project / "data/embeddings/tiny/lightgcn.safetensors", "pt") as f:
        meta = f.metadata()
        user, item = f.get_tensor("user"), f.get_tensor("item")
    n_users = len(pq.read_table(project / "data/kcore/tiny/users.parquet"))
    n_items = len(pq.read_table(project / "data/kcore/tiny/items.parquet"))
    assert user.shape == (n_users, 64) and item.shape == (n_items, 64)
    assert str(user.dtype) == "torch.float32"
    assert meta["model"] == "lightgcn" and meta["dataset"] == "tiny" and meta["dim"] == "64"
