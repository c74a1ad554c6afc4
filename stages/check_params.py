"""check_params: params.yaml validated (pipeline/config/sections.py) before any other stage runs.

DVC writes names and the launcher from params.yaml into the stages' shell commands before any
of our Python starts, so a name that escapes the commands' quoting (e.g. one holding a `'`)
would run in the shell of its stage. Every stage depends on this stage's output, so
`dvc repro` validates the file -- names, launcher grammar, types, ranges, unknown keys -- first
and stops on the first problem. The output is constant: a valid change to params.yaml does not
by itself make any other stage stale.
"""
from __future__ import annotations

import argparse

from pipeline import paths
from pipeline.artifacts import write_json
from pipeline.cli import run
from pipeline.config.params import load_params

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = p.parse_args()
    load_params(args.params)  # validates the whole file; a PipelineError names every problem
    write_json({"valid": True}, paths.check_params())


if __name__ == "__main__":
    run(main)
