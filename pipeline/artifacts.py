"""The one artifact writer: every stage writes through these, atomically.

A file is written to a temporary sibling and renamed into place, so a crash or a bad
input never leaves a half-written artifact that DVC or a later stage could mistake for a
real one. Directories are staged the same way and swapped in whole.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_roots() -> list[Path]:
    """Where the writers may put anything: the repository's data/ (the working directory is
    the repository root), the download cache, and the system temp dir (scratch space; tests
    write there). Nothing else, so a bad name or path can never swap the user's own files."""
    from pipeline.data.download import cache_dir  # lazy: pipeline.data.download imports this module

    return [Path("data").resolve(), cache_dir().resolve(), Path(tempfile.gettempdir()).resolve()]


def check_target(path: str | os.PathLike) -> Path:
    """`path` if an atomic writer may replace it, else a PipelineError naming it. Refused: a
    '..' component (a traversal spelled out), anything in data/local/ (the user's own data is
    input, never output), and anything that does not resolve inside one of write_roots().
    The last component is not followed: if it is a symlink, the swap replaces the link itself
    and never touches what it points to."""
    path = Path(path)
    if ".." in path.parts:
        raise PipelineError(f"output path {str(path)!r} contains '..'; refused")
    resolved = path.absolute().parent.resolve() / path.absolute().name
    local = Path("data", "local").resolve()
    if resolved == local or local in resolved.parents or resolved in local.parents:
        raise PipelineError(f"output path {str(path)!r} resolves to {resolved}, which is or holds the "
                            f"user's own data ({local}); refused")
    roots = write_roots()
    if not any(root in resolved.parents for root in roots):
        raise PipelineError(f"output path {str(path)!r} resolves to {resolved}, outside "
                            f"{' / '.join(map(str, roots))}; refused")
    return path


def sweep_stale(path: Path) -> list[Path]:
    """Remove the temp siblings an earlier writer of `path` left when it was killed (SIGKILL
    skips the cleanup): `.<name>.<8 random chars>.tmp` from mkstemp/mkdtemp and `.<name>.old`
    from a directory swap (put back when the kill came between the swap's two renames). Safe:
    one output has one writer at a time (DVC runs a stage once; only rank 0 writes)."""
    stale = re.compile(rf"^\.{re.escape(path.name)}\.(?:[a-z0-9_]{{8}}\.tmp|old)$")
    removed = []
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        # killed between the two renames of a swap: the previous output is put back whole
        os.replace(old, path)
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if stale.match(p.name):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp directory; it replaces `path` whole only if the block succeeds."""
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_symlink():  # the output was a link: drop the link, never its target
                old.unlink()
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, atomically and byte-for-byte repeatable. safetensors writes its
    metadata in hash-map order, which changes from process to process, so the same tensors
    gave files with different bytes and DVC hashes (and re-ran every stage downstream): the
    header is written again with sorted keys (tensor offsets are explicit, so order is free)."""
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes with spaces
    with atomic_path(path) as tmp:
        tmp.write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + n:])


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_json(obj: object, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> object:
    """A JSON artifact; a missing, truncated or corrupt file is an error naming it (and the line)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the stage that writes it)") from None
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); truncated or corrupt? "
                            "re-run the stage that writes it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: unreadable ({e})") from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file; safetensors' own errors do not name the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: not found (run the stage that writes it)")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise PipelineError(f"{path}: not a readable safetensors file ({e}); truncated or corrupt? "
                            "re-run the stage that writes it") from None


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
