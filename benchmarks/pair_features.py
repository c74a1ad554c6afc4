"""BDLM-drs's candidate-specific h: the cached-prefix path vs one plain forward per pair.

    python benchmarks/pair_features.py [dataset] [--users 16] [--precision no|bf16]

Reads the pre-loaded LLM (data/llm/<ds>/vocab/pe) and the test top-K rows of the first
`--users` users (data/prompts/<ds>/tokens/), computes h of every (user, candidate) pair prompt
both ways, and prints pairs/s of each, the speed-up and the largest difference."""
from __future__ import annotations

import argparse
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline import paths
from pipeline.bdlm.features import PairPrompts, _plain, pair_features
from pipeline.llm.base import load_base
from pipeline.eval.metrics import candidate_matrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset", nargs="?", default="ml-100k")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--precision", default="no")
    p.add_argument("--max-len", type=int, default=256)
    args = p.parse_args()
    torch.manual_seed(0)
    model, tok = load_base(paths.vocab_llm(args.dataset, "pe"))
    model.eval()
    prompts = paths.prompts(args.dataset, "tokens")
    test = pq.read_table(prompts / "test.parquet")
    rows = test.filter(pc.equal(test["task"], "topk")).slice(0, args.users)
    pairs = PairPrompts(tok, pq.read_table(prompts / "items.parquet")["pair_suffix"].to_pylist(), args.max_len)
    prefixes = pairs.prefixes(rows["pair_prefix"].to_pylist())
    items = candidate_matrix(rows).tolist()
    n = sum(len(c) for c in items)
    tokens = sum(len(pairs.ids(pr, i)) for pr, c in zip(prefixes, items) for i in c)
    start = time.perf_counter()
    cached = pair_features(model, pairs, prefixes, items, "last", args.precision)
    t_cached = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        plain = _plain(model, pairs, prefixes, items, "last", args.precision)
    t_plain = time.perf_counter() - start
    diff = max(float((a - b).abs().max()) for a, b in zip(cached, plain))
    scale = float(torch.cat(plain).abs().mean())
    print(f"{args.dataset}: {len(prefixes)} users x {n // len(prefixes)} candidates = {n} pair prompts, "
          f"{tokens / n:.0f} tokens each; threads {torch.get_num_threads()}, precision {args.precision}")
    print(f"| path | seconds | pairs/s |\n|---|---|---|\n| plain (one forward per pair) | {t_plain:.1f} | "
          f"{n / t_plain:.1f} |\n| cached prefix | {t_cached:.1f} | {n / t_cached:.1f} |")
    print(f"speed-up {t_plain / t_cached:.1f}x; max |h_cached - h_plain| {diff:.2e} (mean |h| {scale:.2f})")


if __name__ == "__main__":
    main()
