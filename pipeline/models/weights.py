"""Domain-model checkpoints: save after training, load (with checks) for evaluation and export."""
from __future__ import annotations

from pathlib import Path

from pipeline import lineage, paths
from pipeline.artifacts import read_json, read_safetensors, write_safetensors
from pipeline.errors import PipelineError
from pipeline.models.base import DomainModel
from pipeline.models.data import Interactions
from pipeline.models.registry import model_class


def save_weights(model: DomainModel, path: Path, metadata: dict[str, str]) -> None:
    write_safetensors(model.state_dict(), path, metadata)


def load_trained(ds: str, model: str, expected_cfg: dict, train: Interactions) -> tuple[DomainModel, dict]:
    """The trained `model` for dataset `ds`, checked against today's params and dataset."""
    folder = paths.domain(ds, model)
    ckpt, cfg_path = folder / "model.safetensors", folder / "config.json"
    if not ckpt.exists() or not cfg_path.exists():
        raise PipelineError(f"{ckpt}: no trained '{model}' for dataset '{ds}'; run "
                            f"`dvc repro pretrain_domain@{ds}-{model}` first")
    trained = read_json(cfg_path)
    for key, value in expected_cfg.items():
        if key in trained and trained[key] != value:
            raise PipelineError(f"{cfg_path}: checkpoint has {key}={trained[key]!r} but params.yaml has "
                                f"domain.{model}.{key}={value!r}; re-run pretrain_domain")
    if (trained["n_users"], trained["n_items"]) != (train.n_users, train.n_items):
        raise PipelineError(f"{cfg_path}: trained on {trained['n_users']} users x {trained['n_items']} items, "
                            f"the dataset now has {train.n_users} x {train.n_items}; re-run pretrain_domain")
    lineage.check(cfg_path, trained, ds, f"pretrain_domain@{ds}-{model}")
    m = model_class(model)(train.n_users, train.n_items, {k: v for k, v in trained.items() if k != "train"})
    try:
        m.load_state_dict(read_safetensors(ckpt)[0])
    except RuntimeError as e:
        raise PipelineError(f"{ckpt}: weights do not fit the '{model}' config ({e})") from e
    m.attach(train)
    return m.eval(), trained
