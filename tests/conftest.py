from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Downloads in tests never touch the user's cache."""
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path_factory.mktemp("cache")))


def make_zip(dest: Path, members: dict[str, Path]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for name, src in members.items():
            zf.write(src, name)
    return dest


def gzip_file(src: Path, dest: Path) -> Path:
    with open(src, "rb") as f, gzip.open(dest, "wb") as g:
        shutil.copyfileobj(f, g)
    return dest


@pytest.fixture
def ml100k_official(tmp_path) -> Path:
    d = tmp_path / "official"
    d.mkdir()
    make_zip(d / "ml-100k.zip", {"ml-100k/u.data": FIXTURES / "ml-100k/u.data",
                                 "ml-100k/u.item": FIXTURES / "ml-100k/u.item"})
    return d


@pytest.fixture
def ml1m_official(tmp_path) -> Path:
    d = tmp_path / "official1m"
    d.mkdir()
    make_zip(d / "ml-1m.zip", {"ml-1m/ratings.dat": FIXTURES / "ml-1m/ratings.dat",
                               "ml-1m/movies.dat": FIXTURES / "ml-1m/movies.dat"})
    return d


@pytest.fixture
def amazon_raw(tmp_path) -> Path:
    d = tmp_path / "amazon"
    d.mkdir()
    gzip_file(FIXTURES / "amazon/reviews_Beauty_5.json", d / "reviews_Beauty_5.json.gz")
    gzip_file(FIXTURES / "amazon/meta_Beauty.json", d / "meta_Beauty.json.gz")
    return d


def random_log(n_users: int, n_items: int, per_user: tuple[int, int], seed: int = 0) -> dict[str, pa.Table]:
    """A random leave-one-out split (uid, iid) with distinct items per user."""
    rng = np.random.default_rng(seed)
    parts = {"train": ([], []), "valid": ([], []), "test": ([], [])}
    for u in range(n_users):
        items = rng.choice(n_items, rng.integers(*per_user), replace=False)
        for name, its in (("train", items[:-2]), ("valid", items[-2:-1]), ("test", items[-1:])):
            parts[name][0].extend([u] * len(its))
            parts[name][1].extend(its.tolist())
    return {k: pa.table({"uid": pa.array(u, pa.int32()), "iid": pa.array(i, pa.int32())})
            for k, (u, i) in parts.items()}


def tiny_project(root: Path) -> dict:
    """A temp copy of the project (pipeline/, stages/, dvc.yaml) with the tiny local dataset;
    returns params.yaml sized for it, for the caller to adjust and write with
    `write_params` before `dvc init --no-scm`."""
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "data/local", root / "data/local")
    shutil.copytree(FIXTURES / "local", root / "data/local/tiny")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = ["tiny"]
    params["kcore"].update(user_k=3, item_k=3)
    params["negatives"].update(topk_negatives=5, ranking_negatives=10, text_pool=5)
    return params


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
