"""Line-oriented parsing that reports the file and line number of a malformed line."""
from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from pipeline.errors import PipelineError

T = TypeVar("T")


def open_text(path: Path, encoding: str = "utf-8"):
    if not path.exists():
        raise PipelineError(f"{path}: file missing")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def parse_lines(path: Path, parse: Callable[[str], T], encoding: str = "utf-8",
                skip_header: bool = False) -> Iterator[T]:
    """Yield parse(line) for every non-empty line; a failure names path:line."""
    with open_text(path, encoding) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, start=1):
                if skip_header and lineno == 1:
                    continue
                line = line.rstrip("\r\n")
                if not line:
                    continue
                try:
                    yield parse(line)
                except (ValueError, SyntaxError, KeyError, IndexError, TypeError) as e:
                    raise PipelineError(f"{path}:{lineno}: malformed line ({e}): {line[:200]!r}") from e
        except (EOFError, OSError, UnicodeDecodeError) as e:  # truncated gzip, bad bytes
            raise PipelineError(f"{path}: unreadable after line {lineno} ({e}); "
                                "truncated or corrupt file?") from e


def fields(line: str, sep: str, n: int) -> list[str]:
    parts = line.split(sep)
    if len(parts) != n:
        raise ValueError(f"expected {n} fields separated by {sep!r}, got {len(parts)}")
    return parts


def finite_float(text: str) -> float:
    """float(text), refusing NaN and infinities (float() accepts 'nan' and 'inf')."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def nonempty_id(text: str, what: str) -> str:
    """An id field, refusing an empty one (it would become user/item "")."""
    if not text.strip():
        raise ValueError(f"empty {what}")
    return text
