"""Benchmark (issue #15's table): SASRec, GRU4Rec and BERT4Rec trained to convergence "before"
(every batch padded to max_len, plain shuffled batches, full softmax) and "after" (padding-free,
length-bucketed batches), optionally also "sampled" (after + the logQ-corrected sampled softmax),
same seed, in one run.

Not a test. Each (model, mode) is trained with pipeline.models.trainer.fit -- the trainer the
pipeline uses: Adam, early stopping on valid NDCG@10 (all items, train items masked) with
--patience, at most --max-epochs, the best weights kept -- and then scored on test over all
items. Printed per row: seconds per training epoch (the mean; validation excluded), the epoch
with the best valid NDCG@10 and the epochs run, total wall time (training + every validation
+ the test pass), test NDCG@10 with the user's train and valid items masked and unmasked.

Model settings come from --params (the repository's params.yaml: domain.<model> and
domain.train), except bucket / loss / n_sampled, which the mode sets, and the epoch cap and
patience given here. The synthetic log is benchmarks/sequential_padding.py's Amazon-shaped one
(long-tailed user lengths, Zipf items, a planted next-item pattern), leave-one-out.

    OMP_NUM_THREADS=1 python benchmarks/sequential_baselines.py --models sasrec   # one model, < 10 min
    OMP_NUM_THREADS=1 python benchmarks/sequential_baselines.py --modes before after sampled
    python benchmarks/sequential_baselines.py --no-synthetic --dataset ml-1m --data /path/to/data

Measured (defaults: 2,000 users, 2,000 items, 27,239 train interactions, patience 3, at most 20
epochs, 256 uniform negatives for `sampled`; one invocation per model, 1 thread, on a 2-core
machine that other jobs kept at load ~7, so wall times are inflated and noisy):

    model     mode      s/epoch  speedup  best ep  epochs  total s   valid  NDCG@10  unmasked
    sasrec    before       6.53     1.0x       20     20+    167.0  0.2879   0.2711    0.2441
    sasrec    after        2.03     3.2x       20     20+     49.6  0.3071   0.2937    0.2668
    sasrec    sampled      1.62     4.0x        5      8      18.0  0.2029   0.1877    0.1590
    gru4rec   before       1.83     1.0x        4      7      17.1  0.2075   0.1911    0.1607
    gru4rec   after        1.38     1.3x        5      8      12.5  0.2102   0.1923    0.1607
    gru4rec   sampled      0.60     3.0x       14     17      13.1  0.1828   0.1697    0.1439
    bert4rec  before      11.38     1.0x        5      8     120.9  0.2104   0.1909    0.1592
    bert4rec  after        2.18     5.2x       14     17      49.7  0.2304   0.2145    0.1813
    bert4rec  sampled      2.48     4.6x       11     14      47.5  0.1986   0.1869    0.1564

SASRec (lr 0.001) had not converged at 20 epochs either way. With --max-epochs 60, `--modes
after` ran all 60 (still improving: best epoch 59, 3.77 s/epoch, 281 s, valid .4313, test
NDCG@10 .4492 / unmasked .4275), and `--modes before` did not finish within the 10-minute limit
(killed at 600 s), so SASRec's epochs-to-convergence is not measured here.

Before and after see different batches (bucket 1 vs 16: other users share a batch), so their
training paths differ; the loss itself is the same up to float error (tests). GRU4Rec gains
little: it was already packed, so pads never cost it much. On a 2,000-item catalogue the
sampled softmax (256 uniform negatives) is cheaper but clearly weaker; with 512 negatives drawn
by popularity ** 0.75 SASRec reached valid .2754 / test .2569 at the 20-epoch cap (3.08 s/epoch):
it is meant for catalogues far larger than its sample, and `ce` stays the default.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sequential_padding import synthetic  # noqa: E402
from pipeline.eval import metrics  # noqa: E402
from pipeline import paths  # noqa: E402
from pipeline.eval.evaluator import EvalSets, valid_score  # noqa: E402
from pipeline.models.registry import model_class  # noqa: E402
from pipeline.config.params import load_params  # noqa: E402
from pipeline.models.trainer import build_model, domain_configs, fit  # noqa: E402

MODES = {  # name: (full_width, bucket, loss) -- bucket None: params.yaml's
    "before": (True, 1, "ce"),
    "after": (False, None, "ce"),
    "sampled": (False, None, "sampled"),
}


def test_ndcg(model, ev: EvalSets) -> tuple[float, float]:
    """Test NDCG@10 over all items: (train + valid items masked, nothing masked)."""
    import torch

    t = ev.splits["test"]
    model.eval()
    model.set_history(ev.history("test"))
    with torch.no_grad():
        masked, unmasked = metrics.retrieval_ranks(
            lambda u: model.score_all(torch.from_numpy(np.asarray(u, dtype=np.int64))).float().numpy(),
            t["uid"].to_numpy(), t["iid"].to_numpy(), ev.known("test"))
    return (metrics.rank_metrics(masked, (10,))["NDCG@10"], metrics.rank_metrics(unmasked, (10,))["NDCG@10"])


def run(ev: EvalSets, params: dict, name: str, mode: str, args) -> dict:
    full_width, bucket, loss = MODES[mode]
    cfg, train = domain_configs(params, name)
    cfg = {**cfg, "loss": loss, **({"bucket": bucket} if bucket is not None else {})}
    if loss == "sampled":
        cfg["n_sampled"] = min(args.n_sampled, ev.n_items - 1)
        cfg["sampled_alpha"] = args.sampled_alpha
    train = type(train)(**{**train.__dict__, "epochs": args.max_epochs, "patience": args.patience,
                           "eval_every": 1, "seed": args.seed, "threads": args.threads})
    model = build_model(model_class(name), ev.n_users, ev.n_items, cfg, train.seed)
    model.full_width = full_width
    start = time.perf_counter()
    history = fit(model, ev.train(), lambda m: valid_score(m, ev), train)
    masked, unmasked = test_ndcg(model, ev)
    total = time.perf_counter() - start
    best = max(history, key=lambda r: r.get("valid", -1.0))
    return {"s/epoch": float(np.mean([r["seconds"] for r in history])), "best": best["epoch"],
            "run": history[-1]["epoch"], "total": total, "valid": best["valid"], "masked": masked,
            "unmasked": unmasked, "capped": history[-1]["epoch"] == args.max_epochs}


def table(title: str, ev: EvalSets, params: dict, args) -> None:
    lengths = np.diff(ev.train().offsets)
    print(f"\n{title}: {ev.n_users:,} users, {ev.n_items:,} items, {int(lengths.sum()):,} train interactions, "
          f"train length median {np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, max {lengths.max()}; "
          f"early stopping on valid NDCG@10, patience {args.patience}, at most {args.max_epochs} epochs, "
          f"seed {args.seed}, {args.threads} thread(s)"
          + (f"; sampled: {args.n_sampled} negatives, alpha {args.sampled_alpha}" if "sampled" in args.modes else ""),
          flush=True)
    print(f"{'model':<9} {'mode':<8} {'s/epoch':>8} {'speedup':>8} {'best ep':>8} {'epochs':>7} {'total s':>8} "
          f"{'valid':>7} {'NDCG@10':>8} {'unmasked':>9}", flush=True)
    for name in args.models:
        base = None
        for mode in args.modes:
            r = run(ev, params, name, mode, args)
            base = base or r["s/epoch"]
            print(f"{name:<9} {mode:<8} {r['s/epoch']:>8.2f} {base / r['s/epoch']:>7.1f}x {r['best']:>8d} "
                  f"{r['run']:>6d}{'+' if r['capped'] else ' '} {r['total']:>8.1f} {r['valid']:>7.4f} "
                  f"{r['masked']:>8.4f} {r['unmasked']:>9.4f}", flush=True)
    print("(epochs: run before early stopping; + = stopped by the cap, not converged)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "bert4rec"])
    p.add_argument("--modes", nargs="+", default=["before", "after"], choices=list(MODES))
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--n-sampled", type=int, default=256, help="sampled mode: negatives per batch")
    p.add_argument("--sampled-alpha", type=float, default=0.0, help="sampled mode: popularity exponent (0 uniform)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--dataset", help="also run on <data>/split/<dataset> (skipped when absent)")
    p.add_argument("--data", type=Path, default=paths.DATA, help="the data folder holding split/ and kcore/")
    p.add_argument("--no-synthetic", action="store_true")
    args = p.parse_args()
    params = load_params(args.params)
    if not args.no_synthetic:
        table("synthetic Amazon-shaped", synthetic(args.users, args.items, args.seed), params, args)
    if args.dataset:
        paths.DATA = args.data  # read at call time by pipeline.paths
        if not (paths.split(args.dataset) / "train.parquet").exists():
            print(f"\n{args.dataset}: no split under {args.data}/split, skipped (dvc repro split first)")
        else:
            table(args.dataset, EvalSets.load(args.dataset, candidates=False), params, args)


if __name__ == "__main__":
    main()
