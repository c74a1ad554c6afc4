"""pipeline/config/profile.py: named params profiles turned into a validated `dvc exp run -S` command."""
from __future__ import annotations

import pytest
import yaml

from pipeline.config import profile
from pipeline.errors import PipelineError
from tests.helpers import REPO


def test_paper_profile_validates_and_becomes_one_dvc_command():
    argv = profile.command("paper-ml1m", REPO / "params.yaml", REPO / "profiles")
    assert argv[:5] == ["dvc", "exp", "run", "--name", "paper-ml1m"]
    sets = dict(a.split("=", 1) for a in argv[6::2])
    assert sets["datasets"] == '["ml-1m"]'
    assert sets["llm.base"] == '"lmsys/vicuna-7b-v1.5"'
    assert "accelerate_zero3.yaml" in sets["orchestration.launcher"]
    assert sets["sft.mixed_precision"] == '"bf16"' and sets["prompts.max_train_users"] == "null"
    assert sets["sft.lr"] == "1e-05"


def test_unknown_profile_is_named_with_the_existing_ones():
    with pytest.raises(PipelineError, match=r"profile 'paper-ml10m' does not exist.*profiles: cpu-ml1m, paper-ml1m"):
        profile.command("paper-ml10m", REPO / "params.yaml", REPO / "profiles")


def test_profile_with_a_bad_key_or_value_is_refused_before_running(tmp_path):
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"set": {"sft.lrr": 1e-5}}))
    with pytest.raises(PipelineError, match=r"(?s)profile typo.*sft\.lrr"):
        profile.command("typo", REPO / "params.yaml", tmp_path)
    (tmp_path / "aux-only.yaml").write_text(yaml.safe_dump({"set": {"sft.task_weights": {"mim": 1.0}}}))
    with pytest.raises(PipelineError, match=r"sft\.task_weights: no scored task"):
        profile.command("aux-only", REPO / "params.yaml", tmp_path)
    (tmp_path / "empty.yaml").write_text("description: nothing\n")
    with pytest.raises(PipelineError, match="non-empty `set:`"):
        profile.command("empty", REPO / "params.yaml", tmp_path)
    (tmp_path / "deep.yaml").write_text(yaml.safe_dump({"set": {"datasets.x": 1}}))
    with pytest.raises(PipelineError, match="no section 'datasets'"):
        profile.command("deep", REPO / "params.yaml", tmp_path)


def test_cli_prints_the_command_and_fails_clearly(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    profile.main(["paper-ml1m"])
    out = capsys.readouterr().out
    assert out.startswith("dvc exp run --name paper-ml1m -S")
    profile.main([])
    assert "paper-ml1m" in capsys.readouterr().out


def test_every_shipped_profile_validates():
    for name in profile.available(REPO / "profiles"):
        argv = profile.command(name, REPO / "params.yaml", REPO / "profiles")
        assert argv[:5] == ["dvc", "exp", "run", "--name", name]
