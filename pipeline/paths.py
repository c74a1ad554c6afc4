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


# LLM side
def base_llm() -> Path:
    """The base LLM as a plain transformers checkpoint (download_llm)."""
    return DATA / "llm" / "base"


def vocab_llm(ds: str, mode: str) -> Path:
    """Base LLM + tokenizer after vocabulary expansion in `mode` (pe, rand, text)."""
    return DATA / "llm" / ds / "vocab" / mode


def prompts(ds: str, render: str) -> Path:
    """Prompt Parquet per split; `render` is 'tokens' (<uid_k>/<iid_k>) or 'text' (ids as words)."""
    return DATA / "prompts" / ds / render


def sft(ds: str, variant: str) -> Path:
    return DATA / "llm" / ds / "sft" / variant


def metrics_llm(ds: str, variant: str) -> Path:
    return DATA / "metrics" / "llm" / ds / f"{variant}.json"


def metrics_joint(ds: str, experiment: str) -> Path:
    return DATA / "metrics" / "joint" / ds / f"{experiment}.json"


def outcomes(kind: str, ds: str, name: str) -> Path:
    """Per-user outcomes of one scored row (pipeline.metrics.Outcomes): what the report's
    paired tests read. kind: domain | floors | llm | joint (name '<experiment>-llm'/'-drs')."""
    return DATA / "outcomes" / kind / ds / f"{name}.parquet"


def metrics_floors(ds: str, floor: str) -> Path:
    return DATA / "metrics" / "floors" / ds / f"{floor}.json"
