"""Prefect flow over the DVC DAG: one task per dvc.yaml stage, in DAG order.

`dvc repro` stays the ground truth for what is stale: each task runs
`dvc repro --single-item <every expansion of its stage>` and reports, per expansion, whether
DVC ran it, found it up to date, or restored it from its run cache. The stage list, its
foreach/matrix expansions and the edges all come from dvc.yaml (through DVC's own index);
there is no second list of stages here. Stages named in params.yaml `orchestration.gpu_stages`
get the Prefect tag `gpu` (the rest `cpu`) and, with `gpu_deployment` set, run as a subflow
of that deployment on the GPU work pool (prefect.yaml, README "Watching runs in the Prefect UI").

    python -m pipeline.orchestration.flow                              # the whole DAG
    python -m pipeline.orchestration.flow --stages negatives --downstream -S negatives.seed=7
    python -m pipeline.orchestration.flow --list                       # DAG order and tags, no Prefect run
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator


# Before prefect is imported: its settings are read from the environment at import time.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.config.params import (apply_overrides, override_files, override_owner, parse_overrides,  # noqa: E402
                             read_yaml, write_override_record)
from pipeline.config.sections import validate_params  # noqa: E402

PARAMS_FILE = "params.yaml"
RAN, UP_TO_DATE, RESTORED = "ran", "up to date", "restored from run cache"
TAIL_LINES = 40

_RUNNING = re.compile(r"^Running stage '([^']+)'")
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
_CACHED = re.compile(r"^Stage '([^']+)' is cached - skipping run")


# --- the DAG, read from dvc.yaml ---------------------------------------------------------

def stage_names(root: str | Path = ".") -> list[str]:
    """Stage names (foreach/matrix groups unexpanded) in dvc.yaml order."""
    path = Path(root) / "dvc.yaml"
    if not path.exists():
        raise PipelineError(f"{path}: not found (run from the repository root or pass --root)")
    stages = (read_yaml(path.read_text()) or {}).get("stages") or {}
    return list(stages)


class Dag:
    """Stage names in DAG order, each with its expanded DVC stages and its upstream stages."""

    def __init__(self, order: list[str], members: dict[str, list[str]], upstream: dict[str, set[str]]):
        self.order, self.members, self.upstream = order, members, upstream

    def downstream_of(self, names: set[str]) -> set[str]:
        out, changed = set(names), True
        while changed:
            changed = False
            for s in self.order:
                if s not in out and self.upstream[s] & out:
                    out.add(s)
                    changed = True
        return out

    def gates(self) -> set[str]:
        """Stages every other stage depends on directly (check_params): run with any selection,
        since a stage runs with --single-item and would otherwise skip them."""
        others = lambda g: [s for s in self.order if s != g]  # noqa: E731
        return {g for g in self.order if others(g) and all(g in self.upstream.get(s, ()) for s in others(g))}

    def select(self, stages: list[str] | None, downstream: bool = False) -> list[str]:
        if not stages:
            return list(self.order)
        check_stage_names(stages, self.order)
        chosen = (self.downstream_of(set(stages)) if downstream else set(stages)) | self.gates()
        return [s for s in self.order if s in chosen]


def check_stage_names(stages: list[str], known: list[str]) -> None:
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise PipelineError(f"unknown stage(s) {', '.join(map(repr, unknown))}; "
                            f"dvc.yaml has: {', '.join(known)}")


def load_dag(root: str | Path = ".") -> Dag:
    """Expanded stages and edges from DVC's index, grouped by stage name (`pretrain_domain`
    covers every `pretrain_domain@<dataset>-<model>`), topologically ordered with ties in
    dvc.yaml order."""
    import networkx as nx
    from dvc.repo import Repo

    names = stage_names(root)
    rank = {n: i for i, n in enumerate(names)}
    group = lambda st: st.name.split("@", 1)[0]  # noqa: E731
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges: dependent -> dependency
        stages = list(nx.lexicographical_topological_sort(
            graph.reverse(copy=True), key=lambda s: (rank.get(group(s), len(rank)), s.name)))
        members: dict[str, list[str]] = {n: [] for n in names}
        upstream: dict[str, set[str]] = {n: set() for n in names}
        for s in stages:
            members.setdefault(group(s), []).append(s.name)
            upstream.setdefault(group(s), set())
        for dependent, dependency in graph.edges:
            if group(dependent) != group(dependency):
                upstream[group(dependent)].add(group(dependency))
    order: list[str] = []
    todo = sorted(members, key=lambda n: rank.get(n, len(rank)))
    while todo:
        ready = [n for n in todo if upstream[n] <= set(order)]
        if not ready:
            raise PipelineError(f"stages {todo} depend on each other across their expansions; "
                                "the flow needs an acyclic order of stage names")
        order.append(ready[0])
        todo.remove(ready[0])
    return Dag(order, members, upstream)


def gpu_stage_names(params: dict[str, Any]) -> set[str]:
    """The one place GPU stages are named: params.yaml `orchestration.gpu_stages`."""
    orch = params.get("orchestration") or {}
    return set(orch.get("gpu_stages") or [])


# --- params overrides ----------------------------------------------------------------------

def _round_trip():
    """ruamel.yaml set up to write params.yaml back as it was written: comments, flow lists,
    2-space indents and `null` kept (PyYAML's dump stripped every comment)."""
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _like(old: Any, value: Any) -> Any:
    """`value` as a ruamel node styled like the `old` one (flow or block, and the blank line
    or comment that trailed the old list)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, list):
        new = CommentedSeq(value)
        if isinstance(old, CommentedSeq):
            if old.fa.flow_style():
                new.fa.set_flow_style()
            if len(old) and len(new) and (len(old) - 1) in old.ca.items:
                new.ca.items[len(new) - 1] = old.ca.items[len(old) - 1]
        return new
    if isinstance(value, dict):
        new = CommentedMap(value)
        if isinstance(old, CommentedMap) and old.fa.flow_style():
            new.fa.set_flow_style()
        return new
    return value


def render_overrides(text: str, overrides: dict[str, Any]) -> str:
    """params.yaml's text with the overrides set, every comment and untouched line kept."""
    y = _round_trip()
    doc = y.load(text)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node[part]
        node[last] = _like(node.get(last), value)
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def recover_params(root: str | Path, log=print) -> None:
    """Put params.yaml back after a flow run that was killed (kill -9 skips its `finally`)
    with its -S overrides still in place. Restored only when params.yaml is exactly what that
    run wrote (or already the original); if someone edited it since, nothing is touched and the
    error says what to do. A run that is still alive is left alone (it restores the file; a
    gpu-deployment subflow of it runs on its overrides)."""
    path = Path(root) / PARAMS_FILE
    backup, record = override_files(path)
    if not backup.exists():
        record.unlink(missing_ok=True)  # a record without a backup is from a finished run
        return
    owner = override_owner(path)
    if owner is not None and owner.running():
        return  # not interrupted: that run restores params.yaml itself
    original, current = backup.read_bytes(), path.read_bytes() if path.exists() else b""
    written = owner.written_sha256 if owner is not None else None
    if current != original and hashlib.sha256(current).hexdigest() != written:
        raise PipelineError(f"{path} changed after an interrupted flow run wrote its overrides into it; the "
                            f"original waits in {backup}. Compare the two, keep what you want in {path.name}, "
                            f"then delete {backup.name}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(original)
    os.replace(tmp, path)
    backup.unlink()
    record.unlink(missing_ok=True)
    who = f"flow run pid {owner.pid}" if owner is not None else "a flow run"
    log(f"restored {path} from {backup.name}: {who} was interrupted with its -S overrides in place")


@contextlib.contextmanager
def overridden_params(root: str | Path, overrides: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """params.yaml with the overrides for the duration of the run, then restored byte for
    byte. The original waits in params.yaml.flow-backup and params.yaml.flow-run records this
    process and what it wrote, so that after a kill -9 the next flow run restores it
    (recover_params) and stages refuse to run on the leftover values (load_params)."""
    recover_params(root)
    path = Path(root) / PARAMS_FILE
    original = path.read_bytes()
    params = read_yaml(original.decode()) or {}
    new = apply_overrides(params, overrides)  # raises before anything is touched
    # the whole file as the stages will see it (names and the launcher become paths and shell
    # commands in dvc.yaml): checked before params.yaml is touched or DVC runs
    validate_params(new, "params.yaml" + (" with the -S/--datasets overrides" if overrides else ""))
    if not overrides:
        yield params
        return
    backup, record = override_files(path)
    if backup.exists():
        owner = override_owner(path)
        raise PipelineError(f"{backup} exists: flow run pid {owner.pid if owner else '?'} is running with its own "
                            f"overrides in {path.name}; wait for it to finish (it restores {path.name})")
    text = render_overrides(original.decode(), overrides).encode()
    if read_yaml(text.decode()) != new:  # the round trip must write exactly the validated params
        raise PipelineError(f"{path}: the overrides could not be written faithfully; params.yaml left unchanged")
    backup.write_bytes(original)
    write_override_record(path, hashlib.sha256(text).hexdigest())
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, path)
        yield new
    finally:
        path.write_bytes(original)
        backup.unlink()
        record.unlink(missing_ok=True)


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


def stop_orphaned_server(root: str | Path, log=print) -> list[int]:
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
        log(f"stopped the temporary Prefect server (pid {', '.join(map(str, stopped))}) left running by flow "
            f"run pid {flow_pid}, which was killed")
    return stopped


# --- running one stage ---------------------------------------------------------------------

def dvc_env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_dvc_stages(members: list[str], root: str | Path, log=print) -> dict[str, str]:
    """`dvc repro --single-item <members>`: every output line goes to `log`; returns
    {expanded stage: ran | up to date | restored from run cache}."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *members]
    log(f"$ dvc repro --single-item {' '.join(members)}")
    proc = subprocess.Popen(cmd, cwd=root, env=dvc_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    status: dict[str, str] = {}
    err_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lock = threading.Lock()

    def pump(stream, is_err: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            with lock:
                for rx, what in ((_RUNNING, RAN), (_SKIPPED, UP_TO_DATE), (_CACHED, RESTORED)):
                    m = rx.match(line)
                    if m:
                        status[m.group(1)] = what
                if is_err:
                    err_tail.append(line)
                if line.strip():
                    log(line)

    threads = [threading.Thread(target=pump, args=(proc.stdout, False), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, True), daemon=True)]
    for t in threads:
        t.start()
    rc = proc.wait()
    for t in threads:
        t.join()
    if rc != 0:
        failed = [m for m, s in status.items() if s == RAN][-1:] or members
        raise RuntimeError(f"stage {failed[0]} failed (dvc repro exit {rc}); stderr tail:\n"
                           + "\n".join(err_tail))
    return {m: status.get(m, UP_TO_DATE) for m in members}


@task(name="dvc-stage")
def dvc_stage(stage: str, members: list[str], root: str = ".") -> dict[str, str]:
    logger = get_run_logger()
    result = run_dvc_stages(members, root, log=logger.info)
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
    with overridden_params(root, overrides) as current:
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
    try:
        recover_params(args.root, log=lambda m: print(m, file=sys.stderr))
        stop_orphaned_server(args.root, log=lambda m: print(m, file=sys.stderr))
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
            print("PREFECT_API_URL is not set: running with a temporary local Prefect server "
                  "(start `prefect server start` to keep runs in the UI)", file=sys.stderr)
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
