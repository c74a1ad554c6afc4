"""Benchmark: our LightGCN against RecBole 1.2.1's LightGCN, same split, same hyperparameters.

Not a test. Two modes:
- equal epochs (default): both train exactly --epochs epochs (no validation, no early
  stopping); the final weights are scored on test.
- to convergence (--patience N): both validate after every epoch (valid NDCG@20 over all items,
  train items masked) and stop after N evaluations without a better one, at most --epochs; the
  best epoch's weights are scored on test. Ours is pipeline.models.trainer.fit, the pipeline's
  own loop; RecBole is its trainer with stopping_step N - 1 (it stops once N evaluations in a
  row failed to improve, as ours does).
Each epoch's training loop is timed (validation excluded); test is full ranking with train and
valid items masked, as both libraries do. Printed side by side: seconds/epoch, epochs run and
best epoch, total seconds, Recall@20 and NDCG@20. Issue #15's targets: ours at least as
accurate (NDCG@20) and at least 5x faster per epoch.

    python benchmarks/lightgcn_vs_recbole.py                          # ML-1M, 20 epochs
    python benchmarks/lightgcn_vs_recbole.py --dataset ml-100k --epochs 2   # a quick look
    python benchmarks/lightgcn_vs_recbole.py --dataset ml-100k --epochs 300 --patience 10

RecBole cannot share our pins (it needs numpy<2, scipy<1.11, ...), so it runs in its own venv,
benchmarks/.recbole-venv (git-ignored), which this script builds on first use (a few minutes).
Needs data/split/<dataset> and data/kcore/<dataset> (`dvc repro` or the stages up to split).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.eval.evaluator import EvalSets, retrieval, valid_score  # noqa: E402
from pipeline.models.collaborative import LightGCN  # noqa: E402
from pipeline.models.trainer import TrainConfig, build_model, fit  # noqa: E402

VENV = ROOT / "benchmarks" / ".recbole-venv"
VENV_DONE = VENV / ".complete"  # written last, so a half-built venv is rebuilt, not used
# "+cpu" names the CPU build outright: pip then fails instead of quietly pulling a CUDA torch.
TORCH = "torch==2.13.0+cpu"
# RecBole 1.2.1 uses scipy's dok_matrix._update (gone in 1.11) and numpy 1 aliases; ray (imported
# by recbole.quick_start) needs pkg_resources, which setuptools 81 dropped, while torch 2.13
# requires setuptools>=77.0.3: hence that window rather than setuptools<70.
RECBOLE_PKGS = ["recbole==1.2.1", "numpy<2", "pandas<2.3", "scipy<1.11", "setuptools>=77.0.3,<81"]
THREADS = 2  # torch threads for both sides (--threads)


def ensure_recbole_venv() -> Path:
    """Build benchmarks/.recbole-venv if it is missing or incomplete; return its python."""
    python = VENV / "bin" / "python"
    if VENV_DONE.exists():
        return python
    if VENV.exists():
        shutil.rmtree(VENV)
    print(f"building {VENV.relative_to(ROOT)} (first run only, a few minutes)", flush=True)
    subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    # torch first and alone, then pinned by a constraint so RecBole's deps cannot swap it
    subprocess.run(pip + [TORCH], check=True)
    constraints = VENV / "constraints.txt"
    constraints.write_text(TORCH + "\n")
    subprocess.run(pip + ["-c", str(constraints)] + RECBOLE_PKGS, check=True)
    subprocess.run([str(python), "-c", "import recbole.quick_start, torch; "
                    "assert torch.version.cuda is None, 'CUDA torch in the RecBole venv'"], check=True)
    VENV_DONE.write_text("\n".join([TORCH] + RECBOLE_PKGS) + "\n")
    return python


def export_atomic(ev: EvalSets, folder: Path, name: str) -> None:
    """Our split as RecBole's pre-split atomic files, our dense uid/iid as tokens."""
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        t = ev.splits[split]
        cols = np.column_stack([t["uid"].to_numpy(), t["iid"].to_numpy(), t["timestamp"].to_numpy()])
        np.savetxt(folder / f"{name}.{split}.inter", cols, fmt="%d", delimiter="\t", comments="",
                   header="user_id:token\titem_id:token\ttimestamp:float")


def recbole_config(args, work: Path, name: str) -> dict:
    """RecBole settings matching ours. With benchmark_filename RecBole neither filters nor
    re-splits (Dataset.build returns the three files as they are), so both sides see the
    same users and items; eval_args' split is ignored then."""
    return {
        "dataset": name, "data_path": str(work), "checkpoint_dir": str(work / "saved"),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "embedding_size": args.dim, "n_layers": args.layers, "reg_weight": args.reg,
        # RecBole's default EmbLoss is sum of L2 norms / B; require_pow makes it
        # sum of squared norms / (2B), which is our LightGCN's regulariser
        "require_pow": True,
        "learning_rate": args.lr, "train_batch_size": args.batch, "epochs": args.epochs,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                  "dynamic": False, "candidate_num": 0},
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "NDCG@20",
        "stopping_step": args.patience - 1 if args.patience else args.epochs + 1, "eval_step": 1,
        "eval_batch_size": 4096,
        "use_gpu": False, "gpu_id": "", "seed": args.seed, "reproducibility": True,
        "show_progress": False, "threads": args.threads,
    }


# Runs inside the RecBole venv. fit() with valid_data=None trains exactly `epochs` epochs with
# no validation, early stopping or checkpoint; _train_epoch is wrapped to time the training
# loop only (RecBole builds its graph in the model constructor, untimed, as we do below).
RUNNER = r'''
import json, sys, time, warnings
# deprecations inside ray (pkg_resources), RecBole (torch.sparse.FloatTensor, amp, pandas
# chained assignment): noise in a benchmark's output, not ours to fix
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
warnings.filterwarnings("ignore", message=r"torch\.sparse\.SparseTensor")
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

cfg = json.load(open(sys.argv[1]))
converge = cfg.pop("converge")
sys.argv = sys.argv[:1]  # RecBole's Config parses the command line too
torch.set_num_threads(cfg.pop("threads"))
config = Config(model="LightGCN", dataset=cfg["dataset"], config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
train, valid, test = data_preparation(config, create_dataset(config))
init_seed(config["seed"], config["reproducibility"])
model = get_model("LightGCN")(config, train._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], "LightGCN")(config, model)
times, inner = [], trainer._train_epoch

def timed(train_data, epoch_idx, *a, **k):
    start = time.perf_counter()
    loss = inner(train_data, epoch_idx, *a, **k)
    times.append(time.perf_counter() - start)
    print(f"[recbole] epoch {epoch_idx + 1}: loss {loss / len(train_data):.4f}, {times[-1]:.1f}s",
          file=sys.stderr, flush=True)
    return loss

trainer._train_epoch = timed
start = time.perf_counter()
if converge:  # validate every epoch, stop on NDCG@20, test the best epoch's saved weights
    trainer.fit(train, valid_data=valid, verbose=False, saved=True, show_progress=False)
    best_epoch = len(times) - trainer.cur_step
else:
    trainer.fit(train, valid_data=None, verbose=False, saved=False, show_progress=False)
    best_epoch = len(times)
result = trainer.evaluate(test, load_best_model=converge, show_progress=False)
print(json.dumps({"seconds_per_epoch": sum(times) / len(times), "epoch_seconds": times,
                  "epochs_run": len(times), "best_epoch": best_epoch,
                  "total_seconds": time.perf_counter() - start,
                  "users": train._dataset.user_num - 1, "items": train._dataset.item_num - 1,
                  "recall@20": float(result["recall@20"]), "ndcg@20": float(result["ndcg@20"])}))
'''


def run_recbole(args, ev: EvalSets, work: Path) -> dict:
    """Export the split, then train and test RecBole's LightGCN in its own venv."""
    python = ensure_recbole_venv()
    name = f"{args.dataset}-ours"  # not a name RecBole knows, so it loads no preset or download
    export_atomic(ev, work / name, name)
    (work / "config.json").write_text(json.dumps({**recbole_config(args, work, name), "converge": bool(args.patience)}))
    (work / "runner.py").write_text(RUNNER)
    # RecBole's checkpoint loading predates torch's weights_only default; cwd = work keeps its
    # log_tensorboard/ folder out of the repo
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run([str(python), "runner.py", "config.json"], cwd=work, env=env,
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["users"], result["items"]) == (ev.n_users, ev.n_items), \
        f"RecBole sees {result['users']} users / {result['items']} items, we {ev.n_users} / {ev.n_items}"
    return result


def run_ours(args, ev: EvalSets) -> dict:
    """Our LightGCN, trained in-process with the loop of pipeline.models.trainer.fit (minus
    validation and early stopping; with --patience, fit itself), then full-ranking test metrics."""
    torch.set_num_threads(args.threads)
    # init xavier: RecBole's (and LightGCN's paper's, and the pipeline's LightGCN default)
    cfg = {"dim": args.dim, "n_layers": args.layers, "batch_size": args.batch, "reg": args.reg, "init": args.init}
    model = build_model(LightGCN, ev.n_users, ev.n_items, cfg, args.seed)
    data = ev.train()
    model.set_graph(data)  # built once, untimed, like RecBole's normalised adjacency
    if args.patience:
        return converge_ours(args, ev, model, data)
    rng = np.random.default_rng(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    times = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        start, total, n = time.perf_counter(), 0.0, 0
        for batch in model.batches(data, rng):  # sampling included, as in RecBole's epoch
            loss = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()), n + 1
        times.append(time.perf_counter() - start)
        print(f"[ours] epoch {epoch}: loss {total / n:.4f}, {times[-1]:.1f}s", file=sys.stderr, flush=True)
    model.eval()
    m = retrieval(model, ev, "test", ks=(20,))
    return {"seconds_per_epoch": sum(times) / len(times), "epoch_seconds": times,
            "epochs_run": args.epochs, "best_epoch": args.epochs,
            "recall@20": m["Recall@20"], "ndcg@20": m["NDCG@20"]}


def converge_ours(args, ev: EvalSets, model: LightGCN, data) -> dict:
    """fit with early stopping on valid NDCG@20 (the metric RecBole stops on here); fit keeps
    the best epoch's weights."""
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, patience=args.patience, seed=args.seed, threads=args.threads)
    start = time.perf_counter()
    history = fit(model, data, lambda m: valid_score(m, ev, 20), cfg)
    total = time.perf_counter() - start
    m = retrieval(model, ev, "test", ks=(20,))
    times = [r["seconds"] for r in history]
    best = max((r for r in history if "valid" in r), key=lambda r: r["valid"])
    return {"seconds_per_epoch": sum(times) / len(times), "epoch_seconds": times, "epochs_run": len(history),
            "best_epoch": best["epoch"], "total_seconds": total, "recall@20": m["Recall@20"], "ndcg@20": m["NDCG@20"]}


def report(args, ev: EvalSets, ours: dict, theirs: dict) -> None:
    mode = (f"to convergence (patience {args.patience}, at most {args.epochs} epochs)" if args.patience
            else f"{args.epochs} epochs")
    print(f"\nLightGCN on {args.dataset} ({ev.n_users} users, {ev.n_items} items): {mode}, "
          f"dim {args.dim}, {args.layers} layers, lr {args.lr}, batch {args.batch}, reg {args.reg}, ours init {args.init}, "
          f"seed {args.seed}, {args.threads} torch threads")
    print(f"{'implementation':<16}{'s/epoch':>10}{'epochs':>8}{'best':>6}{'total s':>10}{'Recall@20':>12}{'NDCG@20':>10}")
    sides = [(label, r) for label, r in (("ours", ours), ("RecBole 1.2.1", theirs)) if r is not None]
    for label, r in sides:
        total = f"{r['total_seconds']:.0f}" if "total_seconds" in r else "-"
        print(f"{label:<16}{r['seconds_per_epoch']:>10.2f}{r['epochs_run']:>8}{r['best_epoch']:>6}{total:>10}"
              f"{r['recall@20']:>12.4f}{r['ndcg@20']:>10.4f}")
    # per-epoch times show warm-up, or a busy machine, that the mean would hide
    for label, r in sides:
        print(f"{label} epoch seconds: " + " ".join(f"{t:.2f}" for t in r["epoch_seconds"]))
    if ours is None or theirs is None:
        print(f"one side only (--side {args.side}): no ratio or targets")
        return
    ratio = theirs["seconds_per_epoch"] / ours["seconds_per_epoch"]
    print(f"speed ratio (RecBole s/epoch / ours): {ratio:.2f}x")
    print(f"target ours NDCG@20 >= RecBole's: {'MET' if ours['ndcg@20'] >= theirs['ndcg@20'] else 'NOT MET'}")
    print(f"target speed ratio >= 5: {'MET' if ratio >= 5 else 'NOT MET'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--epochs", type=int, default=20, help="fixed for both sides; with --patience, the cap")
    p.add_argument("--patience", type=int, default=0,
                   help="train both to convergence: stop after this many epochs without a better valid NDCG@20")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--init", choices=["xavier", "normal"], default="xavier",
                   help="our tables' init: xavier (RecBole's, the pipeline's LightGCN default) or normal (N(0, 0.1^2))")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads, the same for both sides")
    p.add_argument("--side", choices=["both", "ours", "recbole"], default="both",
                   help="run one side only (e.g. two runs side by side, one thread each); no ratio then")
    args = p.parse_args()
    os.chdir(ROOT)  # pipeline.paths are relative to the repository root
    ev = EvalSets.load(args.dataset)
    ours = run_ours(args, ev) if args.side in ("both", "ours") else None
    theirs = None
    if args.side in ("both", "recbole"):
        with tempfile.TemporaryDirectory(prefix="lightgcn-vs-recbole-") as tmp:
            theirs = run_recbole(args, ev, Path(tmp))
    report(args, ev, ours, theirs)


if __name__ == "__main__":
    main()
