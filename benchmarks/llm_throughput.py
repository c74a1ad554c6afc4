"""SFT and evaluation throughput of the LLM side (a benchmark, not a test).

    python benchmarks/llm_throughput.py                         # the default: SmolLM2 (vocab pe), CPU
    python benchmarks/llm_throughput.py --bucket 1 --mixed-precision no   # the loop before bucketing/autocast
    python benchmarks/llm_throughput.py --dataset ml-1m --llama-1b --device cuda --dtype bf16

Reads the prompts build_prompts wrote (data/prompts/<ds>/tokens/) and the expanded model
(data/llm/<ds>/vocab/pe), or with --llama-1b a 1B-parameter LLaMA-architecture model built
from a config (random weights: throughput only) over the same tokenizer. Prints SFT
samples/s and tokens/s (non-pad tokens) and the share of padding, evaluation prompts/s, and
on CUDA the model FLOPs utilisation (6 N tokens/s for training, 2 N for evaluation, over
--peak-tflops); each also per CPU second (x threads), steadier than wall time on a machine
others share. The SFT steps are the stage's: batches from `batch_indices` (length-bucketed
with --bucket > 1, as `sft.bucket`), the forward under the autocast `sft.mixed_precision`
resolves to (--mixed-precision; `auto` is bf16 on a CPU with AVX512-BF16/AMX).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths  # noqa: E402
from pipeline.llm.base import load_base  # noqa: E402
from pipeline.llm.encoding import collate, encode  # noqa: E402
from pipeline.llm import forward  # noqa: E402
from pipeline.llm.forward import answer_loss  # noqa: E402
from pipeline.precision import PRECISIONS, autocast, resolve  # noqa: E402
from pipeline.llm.scoring import ScoreConfig, Scorer  # noqa: E402
from pipeline.llm.sft import SFTConfig, adamw, batch_indices  # noqa: E402


def llama_1b(vocab_size: int, pad_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
                      tie_word_embeddings=True, pad_token_id=pad_id)
    return LlamaForCausalLM(cfg)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--llama-1b", action="store_true", help="a 1B LLaMA built from a config instead of the base LLM")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the weights' dtype")
    p.add_argument("--mixed-precision", choices=PRECISIONS, default="auto",
                   help="SFT autocast, as sft.mixed_precision (default auto, the stage's default)")
    p.add_argument("--eval-precision", choices=PRECISIONS, default="no",
                   help="scoring autocast, as evaluate_llm.mixed_precision (default no, the stage's default)")
    p.add_argument("--bucket", type=int, default=16, help="sft.bucket: batches per length-sorting window (1: off)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed SFT steps (after one warm-up step)")
    p.add_argument("--eval-prompts", type=int, default=64)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="device peak (H100 SXM bf16 dense: 989)")
    p.add_argument("--full-logits", action="store_true",
                   help="vocabulary logits at every position (the path before pipeline.llm.forward), for comparison")
    args = p.parse_args()
    if args.full_logits:
        forward.keeps_logits = lambda model: False
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model, tok = load_base(paths.vocab_llm(args.dataset, "pe"))
    if args.llama_1b:
        model = llama_1b(len(tok), tok.pad_token_id)
    model = model.to(args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    seq2seq = bool(model.config.is_encoder_decoder)
    folder = paths.prompts(args.dataset, "tokens")
    train = pq.read_table(folder / "train.parquet")
    enc = encode(tok, train["prompt"].to_pylist(), train["answer"].to_pylist(), seq2seq, args.max_len)
    cfg = SFTConfig(batch_size=args.batch_size, seed=0, bucket=args.bucket)
    lengths = [len(r) for r in enc.input_ids]
    precision = resolve(args.mixed_precision, args.device, "--mixed-precision")
    opt = adamw(model.parameters(), 1e-5, 0.0)
    model.train()
    tokens = samples = padded = 0
    for step in range(args.steps + 1):
        if step == 1:  # the first step pays for allocation and kernel selection
            sync(args.device)
            start, cpu, tokens, samples, padded = time.perf_counter(), time.process_time(), 0, 0, 0
        batch = collate(enc, batch_indices(len(enc.input_ids), cfg, step, 0, lengths=lengths), tok.pad_token_id, seq2seq)
        batch = {k: v.to(args.device) for k, v in batch.items()}
        with autocast(precision, args.device):
            loss = answer_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        tokens += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        samples += len(batch["input_ids"])
    sync(args.device)
    train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    test = pq.read_table(folder / "test.parquet").slice(0, args.eval_prompts)
    scorer = Scorer(model.eval(), tok, ScoreConfig(batch_size=16, max_len=args.max_len,
                                                   mixed_precision=args.eval_precision))
    ids = torch.tensor([scorer.token_id("Yes"), scorer.token_id("No")])
    sync(args.device)
    start, cpu = time.perf_counter(), time.process_time()
    scorer.first_token(test["prompt"].to_pylist(), ids)
    sync(args.device)
    eval_s, eval_cpu = time.perf_counter() - start, time.process_time() - cpu
    name = "LLaMA-1B (config, random weights)" if args.llama_1b else str(model.config.architectures)
    print(f"model {name}: {n_params / 1e6:.0f}M parameters, {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads, logits {'everywhere' if args.full_logits else 'where read'}")
    print(f"SFT: {samples / train_s:.2f} samples/s, {tokens / train_s:.0f} tokens/s "
          f"({args.steps} steps of {args.batch_size}, {train_s / args.steps:.2f} s/step, bucket {args.bucket}, "
          f"autocast {precision}, {100 * (1 - tokens / padded):.0f}% padding)")
    # on a machine others share, wall time depends on their load; CPU time much less
    threads = torch.get_num_threads()
    print(f"SFT per CPU time: {tokens / train_cpu * threads:.0f} tokens/s and {samples / train_cpu * threads:.2f} "
          f"samples/s at {threads} threads' worth of CPU ({train_cpu:.1f} CPU s for {train_s:.1f} s wall)")
    print(f"evaluation: {len(test) / eval_s:.2f} prompts/s ({len(test)} prompts, {eval_s:.1f} s, "
          f"autocast {scorer.precision}); per CPU time {len(test) / eval_cpu * threads:.2f} prompts/s")
    if args.device == "cuda":
        mfu = 6 * n_params * tokens / train_s / (args.peak_tflops * 1e12)
        print(f"SFT model FLOPs utilisation: {100 * mfu:.1f}% of {args.peak_tflops:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
