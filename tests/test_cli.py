"""pipeline/cli.py: a stage killed with SIGTERM leaves no temp output behind."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.helpers import REPO

STAGE = """
import sys, time
from pathlib import Path
from pipeline.artifacts import atomic_dir
from pipeline.cli import run

def main():
    with atomic_dir(Path(sys.argv[1]) / "out") as tmp:
        (tmp / "part.bin").write_bytes(b"x" * 1000)
        print("writing", flush=True)
        time.sleep(60)

run(main)
"""


def test_sigterm_removes_the_stages_temp_output(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STAGE, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temp dir exists now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []
