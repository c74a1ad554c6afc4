"""Prefect flow over the DVC DAG (pipeline/orchestration/flow.py, with dag.py and runner.py), the flow's
params overrides (pipeline/config/params.py) and the status view (pipeline/orchestration/status.py).

The slow tests run the flow in Prefect's ephemeral mode on the data half of the real
dvc.yaml (download .. negatives) over the tiny local fixture in a temp dir."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# Prefect reads its settings when first imported: a throwaway home for this test session.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402
import yaml  # noqa: E402

from pipeline.config.params import overridden_params, parse_overrides  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.orchestration import flow as pf  # noqa: E402
from pipeline.orchestration.dag import gpu_stage_names, load_dag, stage_names  # noqa: E402
from pipeline.orchestration.runner import RAN, RESTORED, UP_TO_DATE  # noqa: E402
from tests.helpers import DATA_STAGES, REPO, tiny_dvc_project  # noqa: E402

# --- fast ------------------------------------------------------------------------------

def test_dag_order_comes_from_dvc_yaml():
    dag = load_dag(REPO)
    names = stage_names(REPO)
    assert sorted(dag.order) == sorted(names)  # every dvc.yaml stage, no other list
    pos = {s: i for i, s in enumerate(dag.order)}
    for stage, ups in dag.upstream.items():
        assert all(pos[u] < pos[stage] for u in ups), (stage, ups)
    assert [s for s in dag.order if s in DATA_STAGES] == DATA_STAGES
    assert dag.upstream["negatives"] == {"split", "kcore", "check_params"}  # params validated first
    assert all("check_params" in ups for s, ups in dag.upstream.items() if s != "check_params")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage, members in dag.members.items():
        assert all(m.split("@")[0] == stage for m in members)
    n_models = len(params["domain"]["models"]) * len(params["datasets"])
    assert len(dag.members["pretrain_domain"]) == n_models  # the matrix, grouped under one task


def test_stage_subset_and_downstream():
    dag = load_dag(REPO)
    # check_params gates every stage: it runs with any selection (stages run with --single-item)
    assert dag.select(["negatives", "kcore"]) == ["check_params", "kcore", "negatives"]
    down = dag.select(["split"], downstream=True)
    assert down[:3] == ["check_params", "split", "negatives"]
    assert {"pretrain_domain", "evaluate_domain", "baselines"} <= set(down)
    assert not {"download", "prepare", "kcore"} & set(down)
    assert dag.select(None) == dag.order


def test_unknown_stage_is_named(capsys):
    with pytest.raises(PipelineError, match=r"unknown stage\(s\) 'negativez'.*dvc.yaml has: check_params, download"):
        load_dag(REPO).select(["negativez"])
    assert pf.main(["--root", str(REPO), "--stages", "negativez"]) == 2
    assert "unknown stage(s) 'negativez'" in capsys.readouterr().err


def test_gpu_tags_come_from_params(capsys):
    assert pf.main(["--root", str(REPO), "--list"]) == 0
    tags = dict(line.split()[:2] for line in capsys.readouterr().out.splitlines())
    gpu = gpu_stage_names(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert "pretrain_domain" in gpu
    assert tags == {s: ("gpu" if s in gpu else "cpu") for s in stage_names(REPO)}


@pytest.mark.parametrize("override, message", [
    (["negatives.sed=3"], "unknown param 'negatives.sed'"),
    (["nosection.key=1"], "unknown param 'nosection.key'"),
    (["negatives.seed=seven"], r"param 'negatives.seed' is int \(2024\), got str 'seven'"),
    (["kcore.user_k=true"], "param 'kcore.user_k' is int"),
    (["negatives=3"], "param 'negatives' is dict"),
    (["datasets=ml-100k"], "param 'datasets' is list"),
])
def test_bad_override_leaves_params_untouched(tmp_path, capsys, override, message):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    assert pf.main(["--root", str(tmp_path), "--stages", "negatives", "-S", *override]) == 2
    assert re.search(message, capsys.readouterr().err)
    with pytest.raises(PipelineError, match=message):
        with overridden_params(tmp_path, parse_overrides(override)):
            pass
    assert (tmp_path / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


def test_override_is_applied_then_restored_byte_for_byte(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with overridden_params(tmp_path, {"negatives.seed": 7, "kcore.min_rating": 4,
                                             "negatives.popularity_alpha": 1, "datasets": ["a", "b"]}):
            now = yaml.safe_load((tmp_path / "params.yaml").read_text())
            assert now["negatives"]["seed"] == 7 and now["kcore"]["min_rating"] == 4
            assert now["datasets"] == ["a", "b"]
            assert (tmp_path / "params.yaml.flow-backup").read_bytes() == before
            raise RuntimeError("boom")
    assert (tmp_path / "params.yaml").read_bytes() == before
    assert not (tmp_path / "params.yaml.flow-backup").exists()


def test_unreachable_server_says_how_to_fix_it():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    res = subprocess.run([sys.executable, "-m", "pipeline.orchestration.flow", "--stages", "download"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api but no Prefect server answers" in res.stderr
    assert "prefect server start" in res.stderr and "unset PREFECT_API_URL" in res.stderr


def test_only_the_flow_imports_prefect():
    """The DAG, the runner, the status view and the overrides work without Prefect: importing
    them (in a fresh interpreter) must not import it; the flow module does."""
    code = ("import sys\n"
            "import pipeline.orchestration.dag, pipeline.orchestration.runner, pipeline.orchestration.status\n"
            "import pipeline.orchestration.launch, pipeline.config.params\n"
            "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))\n"
            "import pipeline.orchestration.flow\n"
            "print('prefect' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"], res.stdout


def test_cli_help():
    res = subprocess.run([sys.executable, "-m", "pipeline.orchestration.status", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "dvc status --json" in res.stdout
    with pytest.raises(SystemExit) as e:
        pf.main(["--help"])
    assert e.value.code == 0


# --- slow: the flow in ephemeral mode --------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    yield tiny_dvc_project(tmp_path_factory.mktemp("flowproject"))
    # Send the last logs and events, then stop the ephemeral server now, while pytest's
    # streams are still open (Prefect would stop it at exit and log to a closed stream).
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)
    if None in SubprocessASGIServer._instances:
        SubprocessASGIServer().stop()


def task_runs(state) -> dict[str, list[str]]:
    """{task run name: tags} for the flow run behind `state`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return {r.name: sorted(r.tags) for r in runs}


def statuses(result: dict[str, dict[str, str]]) -> dict[str, str]:
    return {m: s for members in result.values() for m, s in members.items()}


@pytest.mark.slow
def test_flow_runs_data_half_then_everything_is_up_to_date(project):
    state = pf.llmrec(stages=DATA_STAGES, root=str(project), return_state=True)
    assert state.is_completed(), state.message
    first = state.result()
    assert list(first) == ["check_params", *DATA_STAGES]
    assert statuses(first) == {"check_params": RAN, **{f"{s}@tiny": RAN for s in DATA_STAGES}}
    assert task_runs(state) == {s: ["cpu", "dvc"] for s in ["check_params", *DATA_STAGES]}
    assert (project / "data/negatives/tiny/test_topk.parquet").exists()
    assert not (project / "data/domain").exists()  # the model half was not selected

    again = pf.llmrec(stages=DATA_STAGES, root=str(project))
    assert statuses(again) == {"check_params": UP_TO_DATE, **{f"{s}@tiny": UP_TO_DATE for s in DATA_STAGES}}


@pytest.mark.slow
def test_param_override_reruns_only_its_stage(project):
    before = (project / "params.yaml").read_bytes()
    negatives = project / "data/negatives/tiny/test_topk.parquet"
    sets = negatives.read_bytes()
    out = pf.llmrec(stages=DATA_STAGES, params={"negatives.seed": 7}, root=str(project))
    assert statuses(out) == {"check_params": RAN, **{f"{s}@tiny": UP_TO_DATE for s in DATA_STAGES[:-1]},
                             "negatives@tiny": RAN}
    assert (project / "params.yaml").read_bytes() == before  # restored
    assert negatives.read_bytes() != sets  # other candidates with seed 7

    from pipeline.orchestration.status import rows

    view = {name: (st, m) for name, st, m in rows(project, DATA_STAGES)}
    assert view["negatives@tiny"][0] == "changed: params"  # the lock holds seed 7 now
    assert all(view[f"{s}@tiny"][0] == "up to date" for s in DATA_STAGES[:-1])
    assert "interactions=206" in view["kcore@tiny"][1]

    # Back to the file's seed: DVC restores the earlier outputs from its run cache.
    out = pf.llmrec(stages=["negatives"], root=str(project))
    assert statuses(out) == {"check_params": RAN, "negatives@tiny": RESTORED}  # its output is not cached
    assert negatives.read_bytes() == sets
    assert all(st == "up to date" for _, st, _ in rows(project, DATA_STAGES))


@pytest.mark.slow
def test_flow_rejects_bad_override_and_reports_stage_failure(project):
    before = (project / "params.yaml").read_bytes()
    state = pf.llmrec(stages=["kcore"], params={"kcore.user_k": "many"}, root=str(project), return_state=True)
    assert state.is_failed() and "param 'kcore.user_k' is int" in state.message
    assert (project / "params.yaml").read_bytes() == before
    # A stage that fails: its task fails, with the stage's stderr in the error.
    # (a valid value that the data cannot satisfy: the config layer refuses invalid ones first)
    state = pf.llmrec(stages=["kcore"], params={"kcore.user_k": 100000}, root=str(project),
                      retries=1, return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"(?s)stage kcore@tiny failed.*stderr tail:.*k-core left no interactions"):
        state.result()
    assert (project / "params.yaml").read_bytes() == before
