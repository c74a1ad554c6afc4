"""Where each stage's artifacts live under data/ (mirrored by the outs in dvc.yaml).

Every path built from a name goes through `_under`: each name is checked against the strict
pattern of pipeline/names.py, and the result must resolve inside its area of data/ (e.g.
data/prepared/), so no name can point an output at the user's data/local/ or outside data/.
DATA is relative: the repository root is the working directory (tests chdir to a temp copy).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.names import check_name, check_under

DATA = Path("data")


def _under(area: str, *names: str, suffix: str = "") -> Path:
    """DATA/area/name1/.../nameN[suffix], every name valid, resolving inside DATA/area."""
    for n in names:
        check_name(n)
    path = DATA.joinpath(area, *names)
    if suffix:
        path = path.with_name(path.name + suffix)
    return check_under(path, DATA / area)


def rebase(path: Path, data: str | Path) -> Path:
    """`path` (one of this module's, under DATA) under another data folder (the report's `data`)."""
    return Path(data) / Path(path).relative_to(DATA)


def check_params() -> Path:
    """check_params' constant output: every other stage depends on it."""
    return DATA / "checks" / "params.json"


def local(ds: str) -> Path:
    """The user's own files for dataset `ds` (interactions + items), if it is local."""
    return _under("local", ds)


def raw(ds: str) -> Path:
    return _under("raw", ds)


def prepared(ds: str) -> Path:
    return _under("prepared", ds)


def kcore(ds: str) -> Path:
    return _under("kcore", ds)


def split(ds: str) -> Path:
    return _under("split", ds)


def negatives(ds: str) -> Path:
    return _under("negatives", ds)


def metrics(stage: str, ds: str) -> Path:
    return _under("metrics", stage, ds, suffix=".json")


def metrics_dir(kind: str, ds: str) -> Path:
    """data/metrics/<kind>/<ds>/: one metrics file per scored or trained name (what the report globs)."""
    return _under("metrics", kind, ds)


def metrics_of(kind: str, ds: str, name: str) -> Path:
    """data/metrics/<kind>/<ds>/<name>.json; kind: domain | floors | llm | joint | pretrain | sft | joint_train."""
    return _under("metrics", kind, ds, name, suffix=".json")


def domain(ds: str, model: str) -> Path:
    return _under("domain", ds, model)


def metrics_pretrain(ds: str, model: str) -> Path:
    return _under("metrics", "pretrain", ds, model, suffix=".json")


def metrics_domain(ds: str, model: str) -> Path:
    return _under("metrics", "domain", ds, model, suffix=".json")


def embeddings(ds: str, model: str) -> Path:
    return _under("embeddings", ds, model, suffix=".safetensors")


# LLM side
def base_llm() -> Path:
    """The base LLM as a plain transformers checkpoint (download_llm)."""
    return DATA / "llm" / "base"


def vocab_llm(ds: str, mode: str) -> Path:
    """Base LLM + tokenizer after vocabulary expansion in `mode` (pe, rand, text)."""
    return _under("llm", ds, "vocab", mode)


def prompts(ds: str, render: str) -> Path:
    """Prompt Parquet per split; `render` is 'tokens' (<uid_k>/<iid_k>) or 'text' (ids as words)."""
    return _under("prompts", ds, render)


def sft(ds: str, variant: str) -> Path:
    return _under("llm", ds, "sft", variant)


def metrics_llm(ds: str, variant: str) -> Path:
    return _under("metrics", "llm", ds, variant, suffix=".json")


def metrics_joint(ds: str, experiment: str) -> Path:
    return _under("metrics", "joint", ds, experiment, suffix=".json")


def metrics_sft(ds: str, variant: str) -> Path:
    return _under("metrics", "sft", ds, variant, suffix=".json")


def joint(ds: str, experiment: str) -> Path:
    return _under("joint", ds, experiment)


def metrics_joint_train(ds: str, experiment: str) -> Path:
    return _under("metrics", "joint_train", ds, experiment, suffix=".json")


def checkpoints(*names: str) -> Path:
    """Resumable training state, e.g. checkpoints("sft", ds, variant, key)."""
    return _under("checkpoints", *names)


def outcomes(kind: str, ds: str, name: str) -> Path:
    """Per-user outcomes of one scored row (pipeline.eval.metrics.Outcomes): what the report's
    paired tests read. kind: domain | floors | llm | joint (name '<experiment>-llm'/'-drs')."""
    return _under("outcomes", kind, ds, name, suffix=".parquet")


def metrics_floors(ds: str, floor: str) -> Path:
    return _under("metrics", "floors", ds, floor, suffix=".json")


# Reports (stages baselines, report)
def reports(ds: str) -> Path:
    """baselines.{md,json} and report.{md,json} of one dataset."""
    return _under("reports", ds)


def report_plot(chart: str, ds: str) -> Path:
    """One chart's points for one dataset: a folder per chart (not under <ds>/), so that one
    top-level `plots` entry in dvc.yaml covers every dataset."""
    return _under("reports", "plots", chart, ds, suffix=".json")
