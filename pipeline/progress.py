"""Progress of long loops that shows wherever the output goes.

On a terminal, a tqdm bar. Anywhere else (a log file, a CI job, `dvc repro > log`) tqdm's
carriage-return updates either do not show (tqdm is off there) or pile up on one line, so a
plain log line (stdlib logging, flushed per record) is written instead every `every` seconds,
and one at the end. `setup_logging` is the one logging configuration of the stage scripts.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
EVERY = 30.0  # seconds between lines off a terminal
log = logging.getLogger(__name__)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (a test's capture, a
    redirected stream), not the one it was created with."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO, name: str = "") -> None:
    """Every module logs through `logging.getLogger(__name__)`; a stage's records go to stderr as
    bare lines (the modules tag them, e.g. `[kcore]`). A StreamHandler flushes each record, so
    they show at once in a log file, CI and the Prefect task logs (the flow relays a stage's
    stdout and stderr line by line). Idempotent. `name` sets up one logger instead of the root
    and keeps its records off the root's handlers (the flow: Prefect owns the root logger)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    if name:
        logger.propagate = False


class Progress:
    """`update(n, loss=...)` after each step; `info` is shown as `key value`."""

    def __init__(self, desc: str, total: int | None = None, initial: int = 0, every: float | None = None,
                 disable: bool = False):
        self.desc, self.total, self.done, self.disable = desc, total, initial, disable
        self.every = EVERY if every is None else every
        self.bar = (tqdm(desc=desc, total=total, initial=initial, leave=False, mininterval=5)
                    if sys.stderr.isatty() and not disable else None)
        self.start = self.last = time.perf_counter()
        self.shown = initial  # steps done at the last line printed
        self.info: dict[str, object] = {}

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        self.info.update(info)
        if self.bar is not None:
            self.bar.update(n)
            if info:
                self.bar.set_postfix(info, refresh=False)
        elif not self.disable and time.perf_counter() - self.last >= self.every:
            self.line()

    def line(self) -> None:
        self.last, self.shown = time.perf_counter(), self.done
        total = f"/{self.total}" if self.total is not None else ""
        info = "".join(f", {k} {v}" for k, v in self.info.items())
        log.info(f"[{self.desc}] step {self.done}{total}, {self.last - self.start:.0f}s{info}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.disable and self.last > self.start and self.done > self.shown:
            # a last line for a loop that printed some (a short loop stays quiet)
            self.line()


def progress(items: Iterable[T], desc: str, total: int | None = None, every: float | None = None,
             disable: bool = False) -> Iterator[T]:
    """`for x in progress(items, "desc"):` -- a Progress ticked once per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = Progress(desc, total, every=every, disable=disable)
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        bar.close()

