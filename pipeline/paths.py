"""Where each stage's artifacts live under data/ (mirrored by the outs in dvc.yaml)."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")


def local(ds: str) -> Path:
    """The user's own files for dataset `ds` (interactions + items), if it is local."""
    return DATA / "local" / ds


def raw(ds: str) -> Path:
    return DATA / "raw" / ds


def prepared(ds: str) -> Path:
    return DATA / "prepared" / ds


def kcore(ds: str) -> Path:
    return DATA / "kcore" / ds


def split(ds: str) -> Path:
    return DATA / "split" / ds


def negatives(ds: str) -> Path:
    return DATA / "negatives" / ds


def metrics(stage: str, ds: str) -> Path:
    return DATA / "metrics" / stage / f"{ds}.json"


def domain(ds: str, model: str) -> Path:
    return DATA / "domain" / ds / model


def metrics_pretrain(ds: str, model: str) -> Path:
    return DATA / "metrics" / "pretrain" / ds / f"{model}.json"


def metrics_domain(ds: str, model: str) -> Path:
    return DATA / "metrics" / "domain" / ds / f"{model}.json"


def embeddings(ds: str, model: str) -> Path:
    return DATA / "embeddings" / ds / f"{model}.safetensors"
