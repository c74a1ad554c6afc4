"""export_embeddings: a trained domain model's user/item tables -> data/embeddings/<ds>/<model>.safetensors.

Keys `user` [n_users, d] and `item` [n_items, d], float32, row k = dense id k (DESIGN.md);
metadata names the model, dim, dataset and a hash of the params it was trained with. For
sequential models the user row is the encoder state after the user's training history.
"""
from __future__ import annotations

import argparse
import hashlib
import json

import torch
from safetensors.torch import load_file, save_file

from pipeline import paths
from pipeline.artifacts import atomic_path, read_json
from pipeline.cli import run
from pipeline.errors import PipelineError
from pipeline.evaluation import EvalSets
from pipeline.models.collaborative import LightGCN
from pipeline.models.registry import model_class
from pipeline.params import load_params
from stages.pretrain_domain import configs


def load_trained(ds: str, model: str, expected_cfg: dict, ev: EvalSets):
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
    if (trained["n_users"], trained["n_items"]) != (ev.n_users, ev.n_items):
        raise PipelineError(f"{cfg_path}: trained on {trained['n_users']} users x {trained['n_items']} items, "
                            f"the dataset now has {ev.n_users} x {ev.n_items}; re-run pretrain_domain")
    m = model_class(model)(ev.n_users, ev.n_items, {k: v for k, v in trained.items() if k != "train"})
    try:
        m.load_state_dict(load_file(str(ckpt)))
    except RuntimeError as e:
        raise PipelineError(f"{ckpt}: weights do not fit the '{model}' config ({e})") from e
    return m.eval(), trained


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset")
    p.add_argument("model")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    model_cfg, _ = configs(load_params(args.params), args.model)
    ev = EvalSets.load(args.dataset)
    model, trained = load_trained(args.dataset, args.model, model_cfg, ev)
    if isinstance(model, LightGCN):
        model.set_graph(ev.train())
    model.set_history(ev.history("valid"))  # train items only: what the LLM may see too
    with torch.no_grad():
        user, item = (t.float().contiguous() for t in model.tables())
    meta = {"model": args.model, "dataset": args.dataset, "dim": str(user.shape[1]),
            "params_hash": hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:16]}
    out = paths.embeddings(args.dataset, args.model)
    with atomic_path(out) as tmp:
        save_file({"user": user, "item": item}, str(tmp), metadata=meta)
    print(f"[export_embeddings] {out}: user {tuple(user.shape)}, item {tuple(item.shape)}")


if __name__ == "__main__":
    run(main)
