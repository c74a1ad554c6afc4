"""Benchmark: domain-model training in float32 against bf16 autocast (domain.train.mixed_precision),
same seed, equal epochs -- what decides that parameter's default.

Not a test. For each model, trains exactly --epochs epochs with pipeline.models.trainer.fit (no
early stopping) three times: float32 at --seed, bf16 at --seed, and float32 at --seed + 1 (the
seed-to-seed spread is the noise a precision change must be judged against). Prints wall and
CPU seconds per epoch, the last epoch's loss, and test NDCG@10 / NDCG@20 over all items (train
and valid masked; scoring is float32 in every run). Also prints whether this CPU computes bf16
natively (pipeline.precision.native_bf16: AVX512-BF16 or AMX), which is what `auto` reads.

    OMP_NUM_THREADS=1 python benchmarks/domain_precision.py --dataset ml-100k --data /path/to/data
    OMP_NUM_THREADS=1 python benchmarks/domain_precision.py      # ML-100K-shaped synthetic log
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.lightgcn_epoch import ml100k_shaped  # noqa: E402
from pipeline import paths  # noqa: E402
from pipeline.eval.evaluator import EvalSets, retrieval  # noqa: E402
from pipeline.precision import native_bf16  # noqa: E402
from pipeline.models.registry import model_class  # noqa: E402
from pipeline.config.params import load_params  # noqa: E402
from pipeline.models.trainer import build_model, domain_configs, fit  # noqa: E402


def run(ev: EvalSets, params: dict, name: str, precision: str, seed: int, args) -> dict:
    cfg, train = domain_configs(params, name)
    train = type(train)(**{**train.__dict__, "epochs": args.epochs, "patience": args.epochs + 1,
                           "eval_every": args.epochs, "seed": seed, "threads": args.threads,
                           "mixed_precision": precision})
    model = build_model(model_class(name), ev.n_users, ev.n_items, cfg, seed)
    cpu = time.process_time()
    history = fit(model, ev.train(), lambda m: 0.0, train)
    cpu = (time.process_time() - cpu) / args.epochs
    m = retrieval(model, ev, "test", ks=(10, 20))
    return {"wall": float(np.mean([r["seconds"] for r in history])), "cpu": cpu, "loss": history[-1]["loss"],
            "ndcg10": m["NDCG@10"], "ndcg20": m["NDCG@20"], "resolved": history[-1]["precision"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["sasrec", "lightgcn"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--dataset", help="read <data>/split/<dataset>; without it, an ML-100K-shaped synthetic log")
    p.add_argument("--data", type=Path, default=paths.DATA)
    args = p.parse_args()
    if args.dataset:
        paths.DATA = args.data
        ev, title = EvalSets.load(args.dataset, candidates=False), args.dataset
    else:
        ev, title = ml100k_shaped(args.seed), "ML-100K-shaped synthetic"
    params = load_params(args.params)
    print(f"{title}: {ev.n_users} users, {ev.n_items} items, {ev.splits['train'].num_rows:,} train interactions; "
          f"{args.epochs} epochs, {args.threads} thread(s); CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {native_bf16('cpu')}", flush=True)
    print(f"{'model':<9} {'precision':<9} {'seed':>5} {'wall s/ep':>9} {'CPU s/ep':>9} {'loss':>8} {'NDCG@10':>8} "
          f"{'NDCG@20':>8}", flush=True)
    for name in args.models:
        for precision, seed in (("no", args.seed), ("bf16", args.seed), ("no", args.seed + 1)):
            r = run(ev, params, name, precision, seed, args)
            print(f"{name:<9} {r['resolved']:<9} {seed:>5} {r['wall']:>9.2f} {r['cpu']:>9.2f} {r['loss']:>8.4f} "
                  f"{r['ndcg10']:>8.4f} {r['ndcg20']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
