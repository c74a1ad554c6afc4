"""A short learning curve of SFT under LoRA and under full fine-tuning (a benchmark, not a test).

    python benchmarks/lora_vs_full.py                 # params.yaml's sft settings, ml-100k, vocab pe
    python benchmarks/lora_vs_full.py --steps 20 --no-full --lora-lr 0.001 --row-lr 0.002 0.01

Trains the expanded base model (data/llm/<ds>/vocab/pe) on the real training prompts the sft
stage reads (tokens render, the `full` variant's tasks and task weights), once with full
fine-tuning at sft.lr and once per --row-lr with LoRA (rank sft.lora_r, adapters at sft.lr,
the <uid>/<iid> rows at row_lr), the same batches for each. Reports per run: seconds per
step, the training loss (mean of the first and of the last five steps), the answer loss on
held-out validation prompts before and after, and how far the user/item rows moved relative
to their norm (the rows the run's batches contain, and all of them).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths  # noqa: E402
from pipeline.llm.base import load_base  # noqa: E402
from pipeline.llm.encoding import collate, encode  # noqa: E402
from pipeline.llm.forward import answer_logprobs  # noqa: E402
from pipeline.llm.sft import batch_indices, train, training_pairs  # noqa: E402
from pipeline.llm.tokens import new_tokens  # noqa: E402
from pipeline.config.params import load_params  # noqa: E402
from stages.sft import sft_config  # noqa: E402


@torch.no_grad()
def heldout_loss(model, tok, prompts: list[str], answers: list[str], max_len: int) -> float:
    """Mean answer-token cross-entropy over the held-out pairs (float32, batches of 16)."""
    enc = encode(tok, prompts, answers, False, max_len)
    total = count = 0.0
    model.eval()
    for s in range(0, len(prompts), 16):
        logp, _, _ = answer_logprobs(model, collate(enc, list(range(s, min(s + 16, len(prompts)))),
                                                    tok.pad_token_id, False))
        total, count = total - float(logp.sum()), count + len(logp)
    return total / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--params", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    p.add_argument("--steps", type=int, default=None, help="default: sft.steps")
    p.add_argument("--row-lr", type=float, nargs="+", default=None, help="LoRA runs, one per rate (default sft.row_lr)")
    p.add_argument("--heldout", type=int, default=64, help="validation prompts for the held-out loss")
    p.add_argument("--lora-lr", type=float, default=None, help="the LoRA runs' adapter rate (default sft.lr)")
    p.add_argument("--no-full", action="store_true", help="LoRA runs only")
    args = p.parse_args()
    params = load_params(args.params)
    cfg, weights = sft_config(params)
    cfg = replace(cfg, steps=args.steps or cfg.steps, checkpoint_every=10 ** 9)
    folder = paths.prompts(args.dataset, "tokens")
    prompts, answers = training_pairs(pq.read_table(folder / "train.parquet"), weights, True, cfg.seed)
    valid = pq.read_table(folder / "valid.parquet")
    pick = np.random.default_rng(0).choice(valid.num_rows, min(args.heldout, valid.num_rows), replace=False)
    valid = valid.take(np.sort(pick))
    vocab_dir = paths.vocab_llm(args.dataset, "pe")
    vocab = json.loads((vocab_dir / "vocab.json").read_text())
    runs = [] if args.no_full else [("full", replace(cfg, lora=False))]
    lora_lr = args.lora_lr or cfg.lr
    runs += [(f"lora r{cfg.lora_r} lr {lora_lr:g} row_lr {r:g}", replace(cfg, lora=True, lr=lora_lr, row_lr=r))
             for r in (args.row_lr or [cfg.row_lr])]
    print(f"{args.dataset}: {len(prompts)} training pairs, {cfg.steps} steps x {cfg.batch_size}, lr {cfg.lr:g}, "
          f"bucket {cfg.bucket}, mixed_precision {cfg.mixed_precision}, {torch.get_num_threads()} threads; "
          f"held-out: {valid.num_rows} validation prompts")
    for name, run_cfg in runs:
        model, tok = load_base(vocab_dir)
        new_ids = tok.convert_tokens_to_ids(new_tokens(vocab["n_users"], vocab["n_items"]))
        enc = encode(tok, prompts, answers, False, cfg.max_len)
        lengths = [len(r) for r in enc.input_ids]
        seen = sorted({t for s in range(run_cfg.steps) for m in range(run_cfg.grad_accum)
                       for i in batch_indices(len(lengths), run_cfg, s, m, lengths=lengths)
                       for t in enc.input_ids[i] if t >= min(new_ids)})
        before = model.get_input_embeddings().weight.detach()[new_ids].clone()
        loss0 = heldout_loss(model, tok, valid["prompt"].to_pylist(), valid["answer"].to_pylist(), cfg.max_len)
        start = time.perf_counter()
        model, history, stats = train(model, tok, prompts, answers, run_cfg, new_token_ids=new_ids)
        seconds = time.perf_counter() - start
        loss1 = heldout_loss(model, tok, valid["prompt"].to_pylist(), valid["answer"].to_pylist(), cfg.max_len)
        after = model.get_input_embeddings().weight.detach()[new_ids]
        rel = ((after - before).norm(dim=1) / before.norm(dim=1)).numpy()
        in_batches = np.isin(np.asarray(new_ids), seen)
        losses = [h["loss"] for h in history]
        print(f"{name:>24}: {seconds / run_cfg.steps:.2f} s/step ({stats['precision']}); train loss "
              f"{np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}; held-out loss {loss0:.3f} -> {loss1:.3f}; "
              f"rows moved (|delta|/|row|) {rel[in_batches].mean():.4f} mean over the {in_batches.sum()} rows "
              f"in its batches (max {rel.max():.4f}), {rel.mean():.4f} over all {len(rel)}")
        print(f"{'':>24}  loss by step: {' '.join(f'{x:.2f}' for x in losses)}")


if __name__ == "__main__":
    main()
