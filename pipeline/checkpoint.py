"""Resumable training checkpoints: one protocol for every training loop here (SFT in
pipeline/llm/sft.py, BDLM joint training in pipeline/bdlm/train.py). Not the domain models'
weight store (pipeline/models/weights.py): that holds final weights, this the state a killed
run continues from.

A checkpoint folder (one per run, e.g. data/checkpoints/sft/<ds>/<variant>/<key>) holds

    step-00000020/      one complete checkpoint: the caller's files + checkpoint.json
    latest              a one-line file naming the newest complete step folder

- atomic: a step is written into `.step-<n>.tmp`, completed with checkpoint.json (its step,
  the run's identity and the caller's JSON metadata), renamed to `step-<n>`, and only then is
  `latest` pointed at it (os.replace of a small file). A save that fails or is killed half-way
  leaves the previous `latest` and its folder as they were;
- identity: `identity` is a hash of whatever decides the run's result (params, input digests);
  a checkpoint written under another identity is refused with a PipelineError naming the
  folder and both hashes, and nothing is overwritten;
- pruning: after `latest` moves, step folders other than the newest `keep` (default 1, as
  both loops always had it) and stale temp folders are deleted;
- what goes in is the caller's: `save(step, write)` calls `write(folder)` on every process
  (model, optimizer, scheduler, RNG, history: accelerate's save_state writes per-process
  shards under ZeRO-3), `load(read)` calls `read(folder)` on every process. Under several
  processes pass `is_main` (the one that renames and points) and `barrier` (every process
  has written before the folder is renamed; accelerate's wait_for_everyone).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import PipelineError

POINTER = "latest"
META = "checkpoint.json"
_STEP = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint: its folder, step and the caller's metadata."""

    path: Path
    step: int
    meta: dict = field(default_factory=dict)


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


class Checkpointer:
    def __init__(self, folder: Path | str, identity: str, *, keep: int = 1, is_main: bool = True,
                 barrier: Callable[[], None] = lambda: None):
        if keep < 1:
            raise ValueError(f"Checkpointer: keep must be >= 1, got {keep}")
        self.folder, self.identity, self.keep = Path(folder), str(identity), keep
        self.is_main, self.barrier = is_main, barrier

    # -- reading
    def latest(self) -> Checkpoint | None:
        """The checkpoint `latest` names, after checking it belongs to this run; None when
        there is none yet. Raises PipelineError for a checkpoint of other inputs, or a
        pointer to a folder that is not a complete checkpoint."""
        pointer = self.folder / POINTER
        if pointer.is_dir():
            raise PipelineError(f"{pointer}: a checkpoint folder in the layout before pipeline/checkpoint.py "
                                f"(no step folders); delete {self.folder} to start the run over")
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text().strip()
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError) as e:
            raise PipelineError(f"{pointer} names {path}, which is not a complete checkpoint ({e}); "
                                f"delete {self.folder} to start the run over") from None
        recorded = meta.get("identity")
        if recorded != self.identity:
            raise PipelineError(f"{path}: checkpoint was written by a run with params hash {recorded}, this run has "
                                f"{self.identity}; refusing to resume into it (nothing overwritten): delete "
                                f"{self.folder} or restore the params and inputs")
        return Checkpoint(path, int(meta["step"]), meta.get("meta", {}))

    def load(self, read: Callable[[Path], None]) -> Checkpoint | None:
        """`read(folder)` on the latest checkpoint (on every process) and that checkpoint; None
        (and no call) when there is none."""
        found = self.latest()
        if found is not None:
            read(found.path)
        return found

    # -- writing
    def save(self, step: int, write: Callable[[Path], None], meta: dict | None = None) -> Path:
        """Write checkpoint `step`: `write(tmp)` on every process, then (main process)
        checkpoint.json, the rename into place, `latest` and the pruning. Returns the step
        folder. `meta` must be JSON (e.g. the loss log)."""
        tmp, final = self.folder / f".{_step_name(step)}.tmp", self.folder / _step_name(step)
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        write(tmp)
        self.barrier()  # every process has written its part before the folder is renamed
        if self.is_main:
            (tmp / META).write_text(json.dumps({"step": step, "identity": self.identity, "meta": meta or {}}))
            if final.exists():  # the same step saved again: the old copy goes once the new one is in place
                old = self.folder / f".{_step_name(step)}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            pointer_tmp = self.folder / f".{POINTER}.tmp"
            pointer_tmp.write_text(final.name + "\n")
            os.replace(pointer_tmp, self.folder / POINTER)
            self._prune(final.name)
        self.barrier()
        return final

    def _prune(self, newest: str) -> None:
        steps = sorted((int(m.group(1)), p) for p in self.folder.iterdir() if (m := _STEP.match(p.name)))
        kept = {p.name for _, p in steps[-self.keep:]} | {newest}
        for _, p in steps:
            if p.name not in kept:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.folder.glob(".step-*"):
            shutil.rmtree(p, ignore_errors=True)
