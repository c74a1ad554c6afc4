"""Benchmark: SASRec trained with batches padded to max_len + 1 (as before) against
padding-free batches (each padded to its longest sequence), same seed, in one run.

Not a test: trains each mode for exactly --epochs epochs with pipeline.models.trainer.fit (no
early stopping), then prints seconds per training epoch, the share of batch cells that are
padding, the time to score every test user, and test NDCG@10 (full ranking, train and valid
items masked). Modes:
  padded          every batch max_len + 1 wide, bucket 1: the old behaviour;
  free, bucket 1  the same batches (same users, same order), each cut to its longest row:
                  same loss up to float error, so NDCG should match `padded` closely;
  free, bucket B  users sorted by length within seeded runs of B batches (--buckets).

The synthetic log is Amazon-shaped: a long-tailed number of items per user (median ~4 train
items, a few users with hundreds), Zipf item popularity over --items items, and a planted
next-item pattern (each item has a few likely successors) so that NDCG@10 means something.
Leave-one-out split: the last item is test, the one before valid, the rest train.

Measured (defaults, 1 thread on a busy 2-core machine): padded 23.9 s/epoch, 86% padding;
padding-free bucket 16: 12.6 s/epoch, 16% padding, NDCG@10 0.163 vs 0.161. The encoder's
share fell ~6x (5.9 s -> 0.9 s forward + backward on 4k users); what is left is mostly the
full softmax over 10k items at the real positions (3.7 s either way), which padding never touched.

    OMP_NUM_THREADS=1 python benchmarks/sequential_padding.py                 # synthetic, ~4 min on 1 core
    OMP_NUM_THREADS=1 python benchmarks/sequential_padding.py --users 2000 --epochs 2   # a quick look
    python benchmarks/sequential_padding.py --dataset ml-100k [--data /path/to/data]  # also a real split
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import paths  # noqa: E402
from pipeline.eval.evaluator import EvalSets, retrieval  # noqa: E402
from pipeline.models.sequential import SASRec  # noqa: E402
from pipeline.models.trainer import TrainConfig, build_model, fit  # noqa: E402


def synthetic(n_users: int, n_items: int, seed: int) -> EvalSets:
    """Leave-one-out splits of an Amazon-shaped log (see the module docstring)."""
    rng = np.random.default_rng(seed)
    # 5-core-like: at least 5 items per user (3 train); Zipf tail, capped at 300
    lengths = np.minimum(4 + rng.zipf(1.7, n_users), 300)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    pop /= pop.sum()
    successors = rng.choice(n_items, size=(n_items, 3), p=pop)  # the planted pattern
    uid, iid = np.repeat(np.arange(n_users), lengths), np.empty(lengths.sum(), dtype=np.int64)
    follow = rng.random(len(iid)) < 0.7  # else a popularity draw: noise
    free = rng.choice(n_items, size=len(iid), p=pop)
    pick = rng.integers(0, 3, len(iid))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    is_start = np.zeros(len(iid), dtype=bool)
    is_start[starts] = True
    for k in range(len(iid)):  # a Markov walk per user; ~1e5 steps, a fraction of a second
        iid[k] = free[k] if is_start[k] or not follow[k] else successors[iid[k - 1], pick[k]]
    pos = np.arange(len(iid)) - np.repeat(starts, lengths)  # position in the user's sequence
    last = np.repeat(lengths, lengths)
    split = np.where(pos == last - 1, "test", np.where(pos == last - 2, "valid", "train"))
    table = pa.table({"uid": uid.astype(np.int32), "iid": iid.astype(np.int32),
                      "rating": np.ones(len(iid), dtype=np.float32), "timestamp": pos.astype(np.int64),
                      "raw_row": np.arange(len(iid), dtype=np.int64)})
    splits = {s: table.filter(pa.array(split == s)) for s in ("train", "valid", "test")}
    return EvalSets(n_users, n_items, splits, {})


def run_mode(ev: EvalSets, cfg: dict, train: TrainConfig, full_width: bool, bucket: int) -> dict:
    model = build_model(SASRec, ev.n_users, ev.n_items, {**cfg, "bucket": bucket}, train.seed)
    model.full_width = full_width
    data = ev.train()
    # the share of batch cells that are padding, over one epoch drawn as training draws it
    cells = real = 0
    for b in model.batches(data, np.random.default_rng(train.seed)):
        cells, real = cells + b["inputs"].numel(), real + int((b["inputs"] >= 0).sum())
    history = fit(model, data, lambda m: 0.0, train)  # no early stopping
    model.eval()
    start = time.perf_counter()
    ndcg = retrieval(model, ev, "test", ks=(10,))["NDCG@10"]
    return {"s/epoch": float(np.mean([r["seconds"] for r in history])), "pad": 1 - real / cells,
            "score s": time.perf_counter() - start, "loss": history[-1]["loss"], "NDCG@10": ndcg}


def compare(name: str, ev: EvalSets, args) -> None:
    cfg = {"dim": args.dim, "max_len": args.max_len, "n_layers": 2, "n_heads": 2, "dropout": 0.2,
           "batch_size": args.batch_size, "loss": "ce"}
    train = TrainConfig(epochs=args.epochs, lr=args.lr, patience=args.epochs + 1, eval_every=args.epochs,
                        seed=args.seed, threads=args.threads)
    lengths = np.diff(ev.train().offsets)
    print(f"\n{name}: {ev.n_users:,} users, {ev.n_items:,} items, {int(lengths.sum()):,} train interactions, "
          f"train length median {np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, "
          f"max {lengths.max()}; SASRec dim {args.dim}, max_len {args.max_len}, batch {args.batch_size}, "
          f"{args.epochs} epochs, seed {args.seed}, {args.threads} thread(s)", flush=True)
    print(f"{'mode':<16} {'s/epoch':>8} {'padding':>8} {'score s':>8} {'loss':>8} {'NDCG@10':>8}", flush=True)
    modes = [("padded", True, 1), ("free, bucket 1", False, 1)] + [(f"free, bucket {b}", False, b)
                                                                  for b in args.buckets]
    base = None
    for label, full_width, bucket in modes:
        r = run_mode(ev, cfg, train, full_width, bucket)
        base = base or r["s/epoch"]
        print(f"{label:<16} {r['s/epoch']:>8.2f} {r['pad']:>8.1%} {r['score s']:>8.2f} {r['loss']:>8.4f} "
              f"{r['NDCG@10']:>8.4f}   x{base / r['s/epoch']:.1f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=8000)
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--buckets", type=int, nargs="*", default=[16], help="bucket values to run padding-free")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dataset", help="also run on data/split/<dataset> (skipped when absent)")
    p.add_argument("--data", type=Path, default=paths.DATA, help="the data folder holding split/ and kcore/")
    p.add_argument("--no-synthetic", action="store_true")
    args = p.parse_args()
    if not args.no_synthetic:
        compare("synthetic Amazon-shaped", synthetic(args.users, args.items, args.seed), args)
    if args.dataset:
        paths.DATA = args.data  # read at call time by pipeline.paths
        if not (paths.split(args.dataset) / "train.parquet").exists():
            print(f"\n{args.dataset}: no split under {args.data}/split, skipped (dvc repro split first)")
        else:
            compare(args.dataset, EvalSets.load(args.dataset, candidates=False), args)


if __name__ == "__main__":
    main()
