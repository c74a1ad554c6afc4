"""The domain benchmarks still run against the pipeline's API, on tiny inputs.

Benchmarks are not tests (their figures are printed, not asserted), but they are the
project's speed evidence, so a refactor that breaks one must fail here: the move to stdlib
logging (issue #16) removed `fit(..., log=...)`, and four benchmarks failed with a TypeError
until this check existed. Each runs as a user runs it, a subprocess from the repository root,
with the smallest arguments it accepts (a few seconds each, 1 thread).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {  # script and tiny arguments: a line its output must contain
    "sequential_baselines": (["--users", "60", "--items", "80", "--models", "sasrec", "gru4rec", "bert4rec",
                              "--modes", "before", "after", "sampled", "--max-epochs", "1", "--patience", "1",
                              "--n-sampled", "16"], "bert4rec  sampled"),
    "sequential_padding": (["--users", "60", "--items", "80", "--epochs", "1"], "free, bucket 16"),
    "lightgcn_epoch": (["--epochs", "1"], "test NDCG@20"),
    "domain_precision": (["--epochs", "1", "--models", "lightgcn"], "lightgcn  bf16"),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_on_tiny_input(script):
    args, expected = CASES[script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, f"benchmarks/{script}.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
