"""Prefect flow over the DVC DAG: one task per dvc.yaml stage, in DAG order.

`dvc repro` stays the ground truth for what is stale: each task runs
`dvc repro --single-item <every expansion of its stage>` and reports, per expansion, whether
DVC ran it, found it up to date, or restored it from its run cache. The stage list, its
foreach/matrix expansions and the edges all come from dvc.yaml (through DVC's own index);
there is no second list of stages here. Stages named in params.yaml `orchestration.gpu_stages`
get the Prefect tag `gpu` (the rest `cpu`) and, with `gpu_deployment` set, run as a subflow
of that deployment on the GPU work pool (prefect.yaml, README "Watching runs in the Prefect UI").

The only module here that imports Prefect: the DAG comes from dag.py, each stage runs through
runner.py, and -S overrides are written and restored by pipeline/config/params.py.

    python -m pipeline.orchestration.flow                              # the whole DAG
    python -m pipeline.orchestration.flow --stages negatives --downstream -S negatives.seed=7
    python -m pipeline.orchestration.flow --list                       # DAG order and tags, no Prefect run
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

# Before prefect is imported: its settings are read from the environment at import time.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task  # noqa: E402

from pipeline.config.params import (PARAMS_FILE, apply_overrides, overridden_params, parse_overrides,  # noqa: E402
                                    read_yaml, recover_params)
from pipeline.config.sections import validate_params  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.progress import setup_logging  # noqa: E402
from pipeline.orchestration.dag import check_stage_names, gpu_stage_names, load_dag, stage_names  # noqa: E402
from pipeline.orchestration.runner import run_dvc_stages  # noqa: E402

log = logging.getLogger(__name__)


# --- the temporary Prefect server of a killed run ------------------------------------------

SERVER_RECORD = ".flow-prefect-server.json"  # in the project root, while a flow runs on a temporary server
_SERVER_MARK = "prefect.server.api.server:create_app"  # in the temporary server's command line


def record_temporary_server(root: str | Path) -> None:
    """Note the pid of the temporary Prefect server this process started, if any: a kill -9 of
    the flow skips Prefect's atexit stop and orphans it, and the next start stops it."""
    try:
        from prefect.server.api.server import SubprocessASGIServer

        procs = [getattr(srv, "server_process", None) for srv in SubprocessASGIServer._instances.values()]
    except (ImportError, AttributeError):  # another Prefect version: nothing to record
        return
    pids = [p.pid for p in procs if p is not None and p.poll() is None]
    if pids:
        (Path(root) / SERVER_RECORD).write_text(json.dumps(
            {"server_pids": pids, "flow_pid": os.getpid(), "host": socket.gethostname()}) + "\n")


def stop_orphaned_server(root: str | Path) -> list[int]:
    """Stop the temporary Prefect server a killed flow run left running (only a process whose
    command line is Prefect's server, so a reused pid is never hit); returns the pids stopped."""
    import psutil

    record = Path(root) / SERVER_RECORD
    try:
        d = json.loads(record.read_text())
        flow_pid, host, pids = int(d["flow_pid"]), str(d["host"]), [int(p) for p in d["server_pids"]]
    except (OSError, ValueError, KeyError, TypeError):
        record.unlink(missing_ok=True)
        return []
    if host != socket.gethostname():
        return []
    if psutil.pid_exists(flow_pid) and flow_pid != os.getpid():
        return []  # that flow still runs, and still owns its server
    stopped = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if _SERVER_MARK not in " ".join(proc.cmdline()):
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except psutil.TimeoutExpired:
                proc.kill()
            stopped.append(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    record.unlink(missing_ok=True)
    if stopped:
        log.info(f"stopped the temporary Prefect server (pid {', '.join(map(str, stopped))}) left running by flow "
            f"run pid {flow_pid}, which was killed")
    return stopped


# --- the flow: one task per stage ---------------------------------------------------------

@task(name="dvc-stage")
def dvc_stage(stage: str, members: list[str], root: str = ".") -> dict[str, str]:
    logger = get_run_logger()
    result = run_dvc_stages(members, root, logger)
    for m, s in result.items():
        logger.info(f"{m}: {s}")
    return result


@task(name="dvc-stage-on-pool")
def dvc_stage_on_pool(stage: str, members: list[str], deployment: str) -> dict[str, str]:
    """Runs the stage as a subflow of `deployment` (the GPU work pool's), which must share
    this workspace (same machine or a shared filesystem): DVC's outputs are files."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    logger.info(f"{stage}: {len(members)} expansion(s) sent to deployment {deployment}")
    run = run_deployment(deployment, parameters={"stages": [stage]}, as_subflow=True)
    if not run.state or not run.state.is_completed():
        raise RuntimeError(f"stage {stage}: flow run {run.name} on {deployment} ended "
                           f"{run.state.name if run.state else 'without a state'}; see its logs")
    return {m: f"done on {deployment}" for m in members}


@flow(name="llmrec")
def llmrec(stages: list[str] | None = None, downstream: bool = False, datasets: list[str] | None = None,
           params: dict[str, Any] | None = None, retries: int = 0, root: str = ".",
           gpu_deployment: str | None = None) -> dict[str, dict[str, str]]:
    """Reproduce the DVC pipeline stage by stage.

    Args:
        stages: stage names from dvc.yaml to run (default: all).
        downstream: also run every stage that depends on the selected ones.
        datasets: replaces params.yaml `datasets` for this run.
        params: overrides, {"section.key": value} (params.yaml is restored afterwards).
        retries: retries per stage task.
        root: the DVC project directory.
        gpu_deployment: run stages tagged `gpu` through this deployment (e.g. "llmrec/llmrec-gpu").
    """
    logger = get_run_logger()
    record_temporary_server(root)
    check_stage_names(list(stages or []), stage_names(root))
    overrides = parse_overrides(params)
    if datasets is not None:
        overrides["datasets"] = list(datasets)
    results: dict[str, dict[str, str]] = {}
    with overridden_params(root, overrides, logger) as current:
        dag = load_dag(root)
        gpu = gpu_stage_names(current)
        for stage in dag.select(stages, downstream):
            members = dag.members[stage]
            if not members:
                logger.info(f"{stage}: no expansion (empty foreach list), skipped")
                continue
            tag = "gpu" if stage in gpu else "cpu"
            opts = dict(name=stage, task_run_name=stage, tags=[tag, "dvc"], retries=retries)
            if tag == "gpu" and gpu_deployment:
                results[stage] = dvc_stage_on_pool.with_options(**opts)(stage, members, gpu_deployment)
            else:
                results[stage] = dvc_stage.with_options(**opts)(stage, members, root)
    return results


# --- command line --------------------------------------------------------------------------

def api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_api(url: str, timeout: float = 5.0) -> None:
    """A clear error when PREFECT_API_URL points at no server."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as e:
        raise PipelineError(
            f"PREFECT_API_URL={url} but no Prefect server answers there ({type(e).__name__}: {e}).\n"
            "Either start one in another terminal:  prefect server start   "
            "(UI and API on http://127.0.0.1:4200; PREFECT_API_URL=http://127.0.0.1:4200/api)\n"
            "or unset the variable to run with a temporary local server:  unset PREFECT_API_URL"
            "  (and `prefect config unset PREFECT_API_URL` if your profile sets it)") from None


def show_logs() -> None:
    """The pipeline's notes (INFO and up: a restored params.yaml, a stopped orphaned server, the
    temporary-server hint) on stderr as bare lines. Not logging.basicConfig: importing Prefect has
    configured the root logger already (WARNING, its console handler), so basicConfig would do
    nothing; the records stay off the root handlers, which would print them a second time.
    Inside the flow, tasks log through Prefect's run logger (their lines are in the Prefect UI)."""
    setup_logging(name="pipeline")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.orchestration.flow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", metavar="STAGE", help="stage names from dvc.yaml (default: all)")
    p.add_argument("--downstream", action="store_true", help="also run the stages that depend on --stages")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="replace params.yaml 'datasets' for this run")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a param for this run (repeatable; value parsed as YAML); "
                        "params.yaml is restored afterwards")
    p.add_argument("--retries", type=int, default=0, help="retries per stage task (default 0)")
    p.add_argument("--root", default=".", help="DVC project directory (default: .)")
    p.add_argument("--gpu-deployment", metavar="FLOW/DEPLOYMENT",
                   help="send stages tagged gpu to this deployment, e.g. llmrec/llmrec-gpu")
    p.add_argument("--list", action="store_true", help="print the stages in DAG order with their tags and exit")
    p.add_argument("--restore-params", action="store_true",
                   help="put params.yaml back from params.yaml.flow-backup after an interrupted run, and exit")
    args = p.parse_args(argv)
    show_logs()
    try:
        recover_params(args.root)
        stop_orphaned_server(args.root)
        if args.restore_params:
            return 0
        check_stage_names(args.stages or [], stage_names(args.root))
        overrides = parse_overrides(args.overrides)
        if args.datasets:
            overrides["datasets"] = args.datasets
        params = read_yaml((Path(args.root) / PARAMS_FILE).read_text()) or {}
        validate_params(apply_overrides(params, overrides),  # validate before Prefect starts
                        "params.yaml" + (" with the -S/--datasets overrides" if overrides else ""))
        if args.list:
            dag, gpu = load_dag(args.root), gpu_stage_names(params)
            for s in dag.select(args.stages, args.downstream):
                print(f"{s:20} {'gpu' if s in gpu else 'cpu'}  {' '.join(dag.members[s])}")
            return 0
        url = api_url()
        if url:
            check_api(url)
        else:
            log.info("PREFECT_API_URL is not set: running with a temporary local Prefect server "
                     "(start `prefect server start` to keep runs in the UI)")
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    state = llmrec(stages=args.stages, downstream=args.downstream, params=overrides or None,
                   retries=args.retries, root=args.root, gpu_deployment=args.gpu_deployment,
                   return_state=True)
    (Path(args.root) / SERVER_RECORD).unlink(missing_ok=True)  # Prefect stops its server at exit
    run_id = state.state_details.flow_run_id
    if url:
        from prefect.settings import PREFECT_UI_URL

        print(f"flow run {run_id}: {PREFECT_UI_URL.value() or url}/runs/flow-run/{run_id}")
    if not state.is_completed():
        print(f"flow run {run_id} {state.name}: {state.message}", file=sys.stderr)
        return 1
    for stage, members in state.result().items():
        for m, s in members.items():
            print(f"{stage:20} {m:40} {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
