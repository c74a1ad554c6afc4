"""The DVC DAG, read from dvc.yaml through DVC's own index: stage names in DAG order, their
foreach/matrix expansions and upstream stages, and which stages are tagged `gpu`
(params.yaml `orchestration.gpu_stages`). No Prefect here: the flow (flow.py) and the status
view (status.py) both read the DAG from this module."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.config.params import read_yaml
from pipeline.errors import PipelineError

os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # load_dag opens the DVC repo in this process


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
