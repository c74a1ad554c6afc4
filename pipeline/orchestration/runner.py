"""Running DVC stages: `dvc repro --single-item <expansions>` in a subprocess, every output
line logged, and per expansion whether DVC ran it, found it up to date, or restored it from
its run cache. No Prefect here: the flow's tasks (flow.py) call run_dvc_stages with their
Prefect run logger, so the lines show in the task's logs."""
from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

RAN, UP_TO_DATE, RESTORED = "ran", "up to date", "restored from run cache"
TAIL_LINES = 40

_RUNNING = re.compile(r"^Running stage '([^']+)'")
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
_CACHED = re.compile(r"^Stage '([^']+)' is cached - skipping run")


def dvc_env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_dvc_stages(members: list[str], root: str | Path,
                   logger: logging.Logger | logging.LoggerAdapter | None = None) -> dict[str, str]:
    """`dvc repro --single-item <members>`: every output line goes to `logger` (this module's
    logger by default; a Prefect task passes its run logger); returns
    {expanded stage: ran | up to date | restored from run cache}."""
    logger = logger or log
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *members]
    logger.info(f"$ dvc repro --single-item {' '.join(members)}")
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
                    logger.info(line)

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
