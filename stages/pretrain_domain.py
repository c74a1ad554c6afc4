"""pretrain_domain: train one domain model on one dataset (early stopping on valid).

Writes data/domain/<dataset>/<model>/{model.safetensors,config.json} (deterministic for a
seed, so unchanged inputs give unchanged outputs) and the training log with wall times to
data/metrics/pretrain/<dataset>/<model>.json. Test metrics come from evaluate_domain.
"""
from __future__ import annotations

import time

from pipeline import lineage, paths
from pipeline.artifacts import atomic_dir, write_json
from pipeline.models.weights import save_weights
from pipeline.cli import dataset_parser, run
from pipeline.eval.evaluator import EvalSets, valid_score
from pipeline.models.registry import model_class
from pipeline.config.params import load_params
from pipeline.models.trainer import build_model, domain_configs, fit

def main() -> None:
    p = dataset_parser(__doc__, ("model", "a domain model name under domain in params.yaml"))
    args = p.parse_args()
    model_cfg, train_cfg = domain_configs(load_params(args.params), args.model)
    ev = EvalSets.load(args.dataset, candidates=False)
    model = build_model(model_class(args.model), ev.n_users, ev.n_items, model_cfg, train_cfg.seed)
    meta = {"model": args.model, "dataset": args.dataset}
    start = time.perf_counter()
    with atomic_dir(paths.domain(args.dataset, args.model)) as tmp:
        history = fit(model, ev.train(), lambda m: valid_score(m, ev, train_cfg.valid_k), train_cfg,
                      checkpoint=tmp / "model.safetensors", metadata=meta)
        save_weights(model, tmp / "model.safetensors", meta)  # the best weights, now loaded
        write_json(lineage.stamp({**model_cfg, "n_users": ev.n_users, "n_items": ev.n_items,
                                  "train": train_cfg.__dict__}, args.dataset), tmp / "config.json")
    best = max(history, key=lambda r: r.get("valid", float("-inf")))
    write_json({"dataset": args.dataset, "model": args.model,
                "train_seconds": round(time.perf_counter() - start, 1), "epochs_run": history[-1]["epoch"],
                "best_epoch": best["epoch"], "best_valid": best.get("valid"), "history": history},
               paths.metrics_pretrain(args.dataset, args.model))


if __name__ == "__main__":
    run(main)
