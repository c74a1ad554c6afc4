"""Benchmark: where a LightGCN training epoch's time goes, and the epoch's cost end to end.

Not a test. Times are CPU seconds of this process except fit's wall-clock s/epoch (on a
busy machine the CPU figure is the steadier one). Part 1 replays one epoch of pipeline.models.trainer.fit's loop by hand and times
each piece: building the batches (BPR negatives, shuffling), the propagation forward (the
sparse matmuls, the layer mean), the loss, the backward pass, Adam's step. Part 2 trains
--epochs epochs with fit itself (no early stopping) and prints seconds per epoch and test
NDCG@20 / Recall@20 over all items (train and valid masked), so that a change to the model
can be checked for speed and for unchanged results at the same seed.

Data: --dataset <name> reads <data>/split/<name> (as the pipeline writes it); without it, an
ML-100K-shaped synthetic log (943 users, 1,682 items, ~100k interactions, long-tailed user
and item degrees; leave-one-out), or ML-1M-shaped (--shape ml-1m: 6,040 users, 3,706 items, ~1M). Settings are params.yaml's domain.lightgcn unless given.

Measured (1 thread, a 2-core machine other jobs kept busy; CPU s/epoch, before = commit
a5a2117, after = the fused, int32, column-blocked propagation; every run's final loss and test
NDCG@20 identical to 6 decimals, before and after):
  ML-1M-shaped, 1 epoch:     93.8 -> 68.4 CPU s (1.37x); NDCG@20 .054928 both; before, the sparse
                             matmuls (forward 43.3 s + backward 45.3 s) were 95% of the epoch
  ML-100K-shaped, 10 epochs: 1.575 -> 1.076 CPU s (1.46x), wall 5.16 -> 3.56 s; NDCG@20 .067476 both

    OMP_NUM_THREADS=1 python benchmarks/lightgcn_epoch.py --threads 1
    python benchmarks/lightgcn_epoch.py --dataset ml-100k --data /path/to/data --epochs 20
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import paths  # noqa: E402
from pipeline.eval.evaluator import EvalSets, retrieval  # noqa: E402
from pipeline.models.collaborative import LightGCN  # noqa: E402
from pipeline.config.params import load_params  # noqa: E402
from pipeline.models.trainer import build_model, domain_configs, fit  # noqa: E402


SHAPES = {"ml-100k": (943, 1682, 106), "ml-1m": (6040, 3706, 165)}  # users, items, mean length


def ml100k_shaped(seed: int, n_users: int = 943, n_items: int = 1682, mean_len: int = 106) -> EvalSets:
    """Users with lognormal lengths (at least 20, as ML's), items drawn by a Zipf-like law."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean_len) - 0.5, 1.0, n_users).astype(int), 20, n_items // 2)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop = pop[rng.permutation(n_items)] / pop.sum()
    uid, iid = [], []
    for u, n in enumerate(lengths):
        uid.append(np.full(n, u))
        iid.append(rng.choice(n_items, n, replace=False, p=pop))
    uid, iid = np.concatenate(uid), np.concatenate(iid)
    pos = np.concatenate([np.arange(n) for n in lengths])
    last = np.repeat(lengths, lengths)
    split = np.where(pos == last - 1, "test", np.where(pos == last - 2, "valid", "train"))
    table = pa.table({"uid": uid.astype(np.int32), "iid": iid.astype(np.int32),
                      "rating": np.ones(len(iid), dtype=np.float32), "timestamp": pos.astype(np.int64),
                      "raw_row": np.arange(len(iid), dtype=np.int64)})
    return EvalSets(n_users, n_items, {s: table.filter(pa.array(split == s)) for s in ("train", "valid", "test")}, {})


def clock() -> float:
    """CPU seconds of this process: on a shared machine wall-clock pieces of a few ms mostly
    measure the other processes (with 1 thread, CPU time is the work done)."""
    return time.process_time()


def profile_epoch(ev: EvalSets, cfg: dict, seed: int, lr: float) -> dict[str, float]:
    """One epoch of fit's loop, each piece timed (deterministic algorithms on, as fit runs)."""
    model = build_model(LightGCN, ev.n_users, ev.n_items, cfg, seed)
    data = ev.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t = defaultdict(float)
    model.train()
    torch.use_deterministic_algorithms(True)
    try:
        start = clock()
        it = model.batches(data, np.random.default_rng(seed))
        while True:
            s = clock()
            batch = next(it, None)
            t["batches (sampling, shuffling)"] += clock() - s
            if batch is None:
                break
            s = clock()
            u, i = model.final_tables()
            t["propagation forward"] += clock() - s
            s = clock()
            eu, ep, en = u[batch["user"]], i[batch["pos"]], i[batch["neg"]]
            loss = -torch.nn.functional.logsigmoid((eu * ep).sum(-1) - (eu * en).sum(-1)).mean()
            reg = (model.user(batch["user"]).pow(2).sum() + model.item(batch["pos"]).pow(2).sum()
                   + model.item(batch["neg"]).pow(2).sum()) / (2 * len(batch["user"]))
            loss = loss + float(cfg.get("reg", 1e-4)) * reg
            t["loss"] += clock() - s
            s = clock()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t["backward"] += clock() - s
            s = clock()
            opt.step()
            t["adam step"] += clock() - s
            t["n batches"] += 1
        t["epoch total"] = clock() - start
    finally:
        torch.use_deterministic_algorithms(False)
    return dict(t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="read <data>/split/<dataset> instead of the synthetic log")
    p.add_argument("--shape", choices=list(SHAPES), default="ml-100k", help="the synthetic log's size")
    p.add_argument("--data", type=Path, default=paths.DATA)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset:
        paths.DATA = args.data
        ev = EvalSets.load(args.dataset, candidates=False)
        name = args.dataset
    else:
        ev = ml100k_shaped(args.seed, *SHAPES[args.shape])
        name = f"{args.shape}-shaped synthetic"
    cfg, train = domain_configs(load_params(args.params), "lightgcn")
    print(f"{name}: {ev.n_users} users, {ev.n_items} items, {ev.splits['train'].num_rows:,} train interactions; "
          f"LightGCN dim {cfg['dim']}, {cfg['n_layers']} layers, batch {cfg['batch_size']}, lr {train.lr}, "
          f"{args.threads} thread(s), seed {args.seed}", flush=True)
    if not args.no_profile:
        prof = profile_epoch(ev, cfg, args.seed, train.lr)
        total = prof.pop("epoch total")
        n = int(prof.pop("n batches"))
        print(f"one epoch, {n} batches, {total:.2f} s:")
        for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<32} {v:7.3f} s  {v / total:6.1%}")
    train = type(train)(**{**train.__dict__, "epochs": args.epochs, "patience": args.epochs + 1,
                           "eval_every": args.epochs, "seed": args.seed, "threads": args.threads})
    model = build_model(LightGCN, ev.n_users, ev.n_items, cfg, train.seed)
    cpu = clock()
    history = fit(model, ev.train(), lambda m: 0.0, train)
    cpu = (clock() - cpu) / args.epochs
    m = retrieval(model, ev, "test", ks=(20,))
    secs = [r["seconds"] for r in history]
    print(f"fit, {args.epochs} epochs: {np.mean(secs):.3f} s/epoch wall (min {min(secs):.3f}), {cpu:.3f} CPU s/epoch, "
          f"final loss "
          f"{history[-1]['loss']:.6f}, test NDCG@20 {m['NDCG@20']:.6f}, Recall@20 {m['Recall@20']:.6f}", flush=True)


if __name__ == "__main__":
    main()
