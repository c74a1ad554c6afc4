"""Run a stage under `orchestration.launcher` without a shell reading the launcher.

dvc.yaml runs the LLM training stages as

    python -m pipeline.orchestration.launch '${orchestration.launcher}' -m stages.sft '<dataset>' '<variant>'

The launcher is several words (`accelerate launch --config_file ...`), so it cannot be one
quoted argument of the stage itself, and written unquoted into `cmd:` a shell ran whatever it
held (`python; touch /tmp/pwned`) before any Python code could look at it, even under a plain
`dvc repro`. Here it arrives as one argument, is checked against the grammar of
pipeline/names.py, split on spaces and exec'd: the process is replaced, so signals, exit
codes and `accelerate`'s own process handling are exactly those of the launcher run directly.
"""
from __future__ import annotations

import os
import sys

from pipeline.errors import PipelineError
from pipeline.names import check_launcher


def command(launcher: str, args: list[str]) -> list[str]:
    """The argv to exec: the checked launcher's words, then the stage's arguments."""
    return check_launcher(launcher, "params.yaml: orchestration.launcher").split(" ") + list(args)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m pipeline.orchestration.launch LAUNCHER ARGS...", file=sys.stderr)
        sys.exit(2)
    try:
        cmd = command(argv[0], argv[1:])
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
