"""Train a domain model: Adam, early stopping on a valid score (higher is better), atomic
checkpoints of the best weights, progress wherever the output goes (pipeline.progress). Readable top to bottom."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pipeline.models.weights import save_weights
from pipeline.errors import PipelineError
from pipeline import precision
from pipeline.models.base import DomainModel, StaticModel, TrainableModel
from pipeline.models.data import Interactions
from pipeline.models.registry import model_class
from pipeline.config.params import get, section
from pipeline.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # evaluations without improvement before stopping
    eval_every: int = 1
    seed: int = 0
    threads: int | None = None  # torch threads; None: torch's default (honours OMP_NUM_THREADS)
    mixed_precision: str = "no"  # auto | no | bf16 (pipeline.precision): bf16 autocasts training steps
    valid_k: int = 10  # early stopping maximises valid NDCG@valid_k (pretrain_domain)


TRAIN_KEYS = {"epochs": int, "lr": (int, float), "weight_decay": (int, float), "patience": int,
              "eval_every": int, "seed": int}
OPTIONAL_TRAIN_KEYS = {"mixed_precision": str, "valid_k": int, "threads": (int, type(None))}  # absent: TrainConfig's default
MIN_TRAIN = {"epochs": 1, "patience": 1, "eval_every": 1, "seed": 0}
# model sizes that must be whole and positive (a 0-dim table trains to nothing, silently)
POSITIVE_MODEL_KEYS = {"dim", "batch_size", "n_heads", "max_len", "bucket", "n_negatives", "n_sampled", "neighbors"}


def domain_configs(params: dict, model: str) -> tuple[dict, TrainConfig]:
    """(model config, training config) for `model`; per-model keys override domain.train."""
    dom = section(params, "domain")
    cls = model_class(model)
    model_cfg = dict(get(dom, model, dict, "domain")) if model in dom else {}
    train = dict(get(dom, "train", dict, "domain"))
    train.update({k: v for k, v in model_cfg.items() if k in TRAIN_KEYS or k in OPTIONAL_TRAIN_KEYS})
    for key, typ in TRAIN_KEYS.items():
        get(train, key, typ, f"domain.{model}" if key in model_cfg else "domain.train")
    for key, typ in OPTIONAL_TRAIN_KEYS.items():
        if key in train:
            get(train, key, typ, f"domain.{model}" if key in model_cfg else "domain.train")
    # degenerate settings are refused here, before the stage touches its output folder: 0
    # epochs swapped an untrained model in (then crashed), dim 0 saved a useless one
    for key, low in {**MIN_TRAIN, "valid_k": 1, "threads": 1}.items():
        if train.get(key) is not None and train[key] < low:
            where = f"domain.{model}" if key in model_cfg else "domain.train"
            raise PipelineError(f"params.yaml: {where}.{key} = {train[key]!r} must be >= {low}")
    for key in ("lr", "weight_decay"):
        if not math.isfinite(train[key]) or train[key] < 0 or (key == "lr" and train[key] == 0):
            where = f"domain.{model}" if key in model_cfg else "domain.train"
            raise PipelineError(f"params.yaml: {where}.{key} = {train[key]!r} must be a finite number "
                                + ("> 0" if key == "lr" else ">= 0"))
    if "mixed_precision" in train:
        where = f"domain.{model}" if "mixed_precision" in model_cfg else "domain.train"
        precision.resolve(train["mixed_precision"], "cpu", f"{where}.mixed_precision")  # refuses a bad value
    for key, value in model_cfg.items():
        if key in POSITIVE_MODEL_KEYS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PipelineError(f"params.yaml: domain.{model}.{key} = {value!r} must be an integer >= 1")
    keys = {**TRAIN_KEYS, **OPTIONAL_TRAIN_KEYS}
    return ({"model": cls.name, **{k: v for k, v in model_cfg.items() if k not in keys}},
            TrainConfig(**{k: train[k] for k in keys if k in train}))


def build_model(cls: type[DomainModel], n_users: int, n_items: int, cfg: dict, seed: int) -> DomainModel:
    """Construct a model with its initial weights drawn from `seed` (repeatable runs)."""
    torch.manual_seed(seed)
    return cls(n_users, n_items, cfg)


def fit(model: DomainModel, data: Interactions, valid_metric: Callable[[DomainModel], float],
        cfg: TrainConfig, checkpoint: Path | None = None, metadata: dict[str, str] | None = None) -> list[dict]:
    """Train `model` in place; at the end it holds the weights with the best valid metric.
    Bitwise repeatable for a seed: with more than one thread, the gradient of an embedding
    gather (index_put with accumulate) sums in a thread-dependent order unless torch's
    deterministic algorithms are on, and LightGCN then drifts by ~1e-7 a step."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _fit(model, data, valid_metric, cfg, checkpoint, metadata)
    finally:
        torch.use_deterministic_algorithms(previous)


def _fit(model, data, valid_metric, cfg: TrainConfig, checkpoint, metadata) -> list[dict]:
    torch.manual_seed(cfg.seed)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if isinstance(model, StaticModel):
        model.build(data)
        score = valid_metric(model)
        log.info(f"[{model.name}] built from counts, valid {score:.4f}")
        return [{"epoch": 0, "valid": score}]
    assert isinstance(model, TrainableModel)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # bf16 autocasts the training steps only: weights, Adam state and the loss stay float32,
    # and validation (like evaluate_domain) scores in float32
    device = next(model.parameters()).device
    mixed = precision.resolve(cfg.mixed_precision, device, "domain.train.mixed_precision")
    history, best, best_state, stale = [], -float("inf"), None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        start, total, n = time.perf_counter(), 0.0, 0
        for batch in progress(model.batches(data, rng), f"{model.name} epoch {epoch}"):
            with precision.autocast(mixed, device):
                loss = model.loss(batch)
            if not torch.isfinite(loss):
                # a NaN/inf loss poisons every weight from here on: stop the stage (the output
                # folder is untouched) instead of saving a model that scores NaN
                raise PipelineError(f"{model.name}: training loss is {loss.item()} at epoch {epoch}, step {n + 1} "
                                    f"(lr {cfg.lr}); nothing was written. Lower the learning rate or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "loss": total / max(n, 1), "seconds": seconds, "precision": mixed}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            model.eval()
            row["valid"] = score = valid_metric(model)
            if score > best:
                best, stale = score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if checkpoint is not None:
                    save_weights(model, checkpoint, {**(metadata or {}), "epoch": str(epoch)})
            else:
                stale += 1
        history.append(row)
        log.info(f"[{model.name}] epoch {epoch}: loss {row['loss']:.4f}, {seconds:.1f}s"
            + (f", valid {row['valid']:.4f}" if "valid" in row else ""))
        if stale >= cfg.patience:
            log.info(f"[{model.name}] early stop: no improvement in {cfg.patience} evaluations")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
