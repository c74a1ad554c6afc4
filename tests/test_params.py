from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.config.params import get, load_params, section
from tests.helpers import REPO


def test_repo_params_load_and_have_every_stage_section():
    params = load_params(REPO / "params.yaml")
    for name in ("download", "kcore", "split", "negatives"):
        assert isinstance(section(params, name), dict)
    assert params["datasets"] == ["ml-100k"]


def test_missing_and_mistyped_params_are_named():
    with pytest.raises(PipelineError, match="missing param 'kcore.user_k'"):
        get({}, "user_k", int, "kcore")
    with pytest.raises(PipelineError, match="'kcore.user_k' must be int, got '5'"):
        get({"user_k": "5"}, "user_k", int, "kcore")
    with pytest.raises(PipelineError, match="'kcore.user_k' must be int, got True"):
        get({"user_k": True}, "user_k", int, "kcore")
    assert get({"min_rating": None}, "min_rating", (int, float, type(None)), "kcore") is None
    with pytest.raises(PipelineError, match="missing section 'split'"):
        section({}, "split")


def test_params_file_missing(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


def test_the_launcher_param_runs_the_llm_training_stages(tmp_path):
    """`orchestration.launcher` is what DVC runs sft and joint_train with (README: the GPU route),
    and only those: the other stages stay single-process `python`."""
    import shutil

    import yaml
    from dvc.repo import Repo

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    launcher = "accelerate launch --config_file configs/accelerate_zero3.yaml"
    params["orchestration"]["launcher"] = launcher
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(tmp_path), no_scm=True).close()
    with Repo(str(tmp_path)) as repo:
        cmds = {s.name: s.cmd for s in repo.index.stages}
    # through pipeline/orchestration/launch.py, which checks the launcher and execs it without a shell
    launched = {name.split("@")[0] for name, cmd in cmds.items()
                if cmd.startswith(f"python -m pipeline.orchestration.launch '{launcher}' -m stages.")}
    assert launched == {"sft", "joint_train"}
    assert all(cmd.startswith("python -m stages.") for name, cmd in cmds.items()
               if name.split("@")[0] not in launched)


@pytest.mark.parametrize("where", [("sft",), ("joint", "train"), ("joint", "experiment", "bdlm")])
def test_a_task_mix_with_no_scored_task_is_refused_by_name(where):
    """Only auxiliary tasks (or every scored task at 0) would train nothing evaluate_llm scores."""
    import yaml

    from pipeline.config.sections import validate_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    node = params
    for k in where:
        node[k] = node.get(k) or {}
        node = node[k]
    node["task_weights"] = {"mim": 1.0, "bpr": 0.5, "mlm": 1.0, "topk": 0.0}
    dotted = ".".join(where).replace(".", r"\.")
    with pytest.raises(PipelineError, match=dotted + r"\.task_weights: no scored task"):
        validate_params(params)
    node["task_weights"] = {"mim": 1.0, "retrieval": 0.1}
    validate_params(params)


def test_params_are_read_as_dvc_reads_them(tmp_path):
    """`dvc exp run -S` rewrites params.yaml in DVC's reading (YAML 1.2): a quoted "no" comes
    back bare. The pipeline reads the file the same way, so it still means the string no, and
    1e-3 is a number (PyYAML's YAML 1.1 made the first False and the second a string)."""
    import shutil

    from pipeline.config.params import load_params, read_yaml

    assert read_yaml("a: no\nb: 1e-3\nc: off\n") == {"a": "no", "b": 0.001, "c": "off"}
    path = tmp_path / "params.yaml"
    shutil.copy("params.yaml", path)
    text = path.read_text()
    assert 'mixed_precision: "no"' in text
    path.write_text(text.replace('mixed_precision: "no"', "mixed_precision: no").replace(
        "lr: 0.0002", "lr: 2e-4", 1))
    p = load_params(path)
    assert p["evaluate_llm"]["mixed_precision"] == "no" and p["sft"]["lr"] == 0.0002
