"""Shared entry-point plumbing for stage scripts: argument parsing and clean error exits."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Callable

from pipeline.errors import PipelineError
from pipeline.names import check_name
from pipeline.progress import setup_logging

log = logging.getLogger(__name__)


def _name_arg(kind: str) -> Callable[[str], str]:
    """argparse type: a name (pipeline/names.py), checked before any path or command uses it."""
    def parse(value: str) -> str:
        try:
            return check_name(value, kind)
        except PipelineError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = kind  # argparse names the argument's type in its message
    return parse


def dataset_parser(description: str, *extra: tuple[str, str]) -> argparse.ArgumentParser:
    """A stage's command line: the dataset, then the `extra` (name, help) positionals, and
    --params. Every positional is a name (dataset, model, mode, variant, experiment) and is
    checked against pipeline/names.py's pattern at parse time."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=_name_arg("dataset name"),
                   help="dataset name, as listed under 'datasets' in params.yaml")
    for name, help_text in extra:
        p.add_argument(name, type=_name_arg(f"{name} name"), help=help_text)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a PipelineError becomes one clear line on stderr and exit code 2.
    SIGTERM (a killed `dvc repro`, a cancelled Prefect run) unwinds like an exception, so the
    stage's temp outputs are removed and nothing half-written is left behind."""
    start = time.perf_counter()
    setup_logging()
    # a library's own prints show as they happen too, also when stdout is a file or a CI log
    # (Python block-buffers stdout there, and nothing appeared for minutes)
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        main()
    except PipelineError as e:
        log.error(f"error: {e}")
        sys.exit(2)
    stage = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    log.info(f"[{stage}] done in {time.perf_counter() - start:.1f}s")
