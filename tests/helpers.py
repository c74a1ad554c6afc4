"""Helpers shared by the test modules: plain functions and constants (the fixtures are in
conftest.py, the tiny models in llm_tiny.py and bdlm_tiny.py). Test modules import these from
here, never from conftest.py or from another test module."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from pipeline.models.data import Interactions

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


def make_zip(dest: Path, members: dict[str, Path]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for name, src in members.items():
            zf.write(src, name)
    return dest


def gzip_file(src: Path, dest: Path) -> Path:
    with open(src, "rb") as f, gzip.open(dest, "wb") as g:
        shutil.copyfileobj(f, g)
    return dest


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


# The data half of dvc.yaml, which the flow tests run on the tiny fixture.
DATA_STAGES = ["download", "prepare", "kcore", "split", "negatives"]


def tiny_dvc_project(root: Path) -> Path:
    """The tiny project (tiny_project) under DVC, data half sized."""
    write_params(root, tiny_project(root))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    return root


def planted(n_users=60, n_items=40, groups=4, per_user=8, seed=0):
    """Users of group g interact only with items of group g: train + one held-out item each."""
    rng = np.random.default_rng(seed)
    size = n_items // groups
    rows, held = [], {}
    for u in range(n_users):
        g = u % groups
        items = rng.choice(np.arange(g * size, (g + 1) * size), per_user + 1, replace=False)
        rows += [(u, int(i), float(rng.integers(3, 6) if i % 2 else rng.integers(1, 3)), t, t)
                 for t, i in enumerate(items[:-1])]
        held[u] = int(items[-1])
    u, i, r, t, raw = zip(*rows)
    train = pa.table({"uid": pa.array(u, pa.int32()), "iid": pa.array(i, pa.int32()),
                      "rating": pa.array(r, pa.float32()), "timestamp": pa.array(t, pa.int64()),
                      "raw_row": pa.array(raw, pa.int64())})
    return Interactions.from_table(train, n_users, n_items), held
