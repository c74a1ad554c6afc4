"""pretrain_domain: train one domain model on one dataset, evaluate it on every protocol.

Writes data/domain/<dataset>/<model>/{model.safetensors,config.json,history.json} and
data/metrics/domain/<dataset>/<model>.json.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from pipeline import paths
from pipeline.artifacts import atomic_dir, write_json
from pipeline.cli import run
from pipeline.evaluation import EvalSets, evaluate, valid_score
from pipeline.models.registry import model_class
from pipeline.params import get, load_params, section
from pipeline.train_domain import TrainConfig, build_model, fit, save_weights

TRAIN_KEYS = {"epochs": int, "lr": (int, float), "weight_decay": (int, float), "patience": int,
              "eval_every": int, "seed": int}


def configs(params: dict, model: str) -> tuple[dict, TrainConfig]:
    dom = section(params, "domain")
    cls = model_class(model)
    model_cfg = dict(get(dom, model, dict, "domain")) if model in dom else {}
    train = dict(get(dom, "train", dict, "domain"))
    train.update({k: v for k, v in model_cfg.items() if k in TRAIN_KEYS})  # per-model overrides
    for key, typ in TRAIN_KEYS.items():
        get(train, key, typ, f"domain.{model}" if key in model_cfg else "domain.train")
    return ({"model": cls.name, **{k: v for k, v in model_cfg.items() if k not in TRAIN_KEYS}},
            TrainConfig(**{k: train[k] for k in TRAIN_KEYS}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset")
    p.add_argument("model")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    model_cfg, train_cfg = configs(load_params(args.params), args.model)
    ev = EvalSets.load(args.dataset)
    model = build_model(model_class(args.model), ev.n_users, ev.n_items, model_cfg, train_cfg.seed)
    out = paths.domain(args.dataset, args.model)
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        history = fit(model, ev.train(), lambda m: valid_score(m, ev),
                      train_cfg, checkpoint=tmp / "model.safetensors",
                      metadata={"model": args.model, "dataset": args.dataset})
        train_seconds = time.perf_counter() - start
        save_weights(model, tmp / "model.safetensors", {"model": args.model, "dataset": args.dataset})
        write_json({**model_cfg, "n_users": ev.n_users, "n_items": ev.n_items,
                    "train": train_cfg.__dict__}, tmp / "config.json")
        write_json(history, tmp / "history.json")
    result = evaluate(model, ev)
    summary = {"dataset": args.dataset, "model": args.model, "train_seconds": round(train_seconds, 1),
               "epochs_run": history[-1]["epoch"], **result}
    write_json(summary, paths.metrics_domain(args.dataset, args.model))
    print(json.dumps({k: v for k, v in result.items()}, indent=None))


if __name__ == "__main__":
    torch.set_num_threads(2)
    run(main)
