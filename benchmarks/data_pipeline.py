"""Benchmark: k-core + split + negatives on a synthetic log (default 10M interactions, 1M items).

Not a test: prints wall time per phase and the peak resident memory of the timed process.
Target on the 2-core / 24 GiB machine: under 5 minutes and under 8 GiB peak in total.

    python benchmarks/data_pipeline.py                      # 10M interactions, 1M items
    python benchmarks/data_pipeline.py --interactions 1e6 --items 1e5   # a quick look
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(out: Path, n_inter: int, n_items: int, n_users: int, seed: int = 0) -> None:
    """Power-law users and items, random times, titles of 3-7 words from a 50k-word vocabulary."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = np.maximum(1, np.round(activity / activity.sum() * n_inter)).astype(np.int64)
    per_user[-1] += n_inter - per_user.sum()
    per_user = np.maximum(per_user, 1)
    users = np.repeat(np.arange(n_users), per_user)[:n_inter]
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=len(users), p=pop / pop.sum())
    ts = rng.integers(1_000_000_000, 1_700_000_000, len(users))
    inter = pa.table({
        "user_id": pa.array(np.char.add("u", users.astype(str))),
        "item_id": pa.array(np.char.add("i", items.astype(str))),
        "rating": pa.array(rng.integers(1, 6, len(users)).astype(np.float32)),
        "timestamp": pa.array(ts.astype(np.int64)),
    })
    pq.write_table(inter, out / "interactions.parquet")
    vocab = np.char.add("w", np.arange(50_000).astype(str))
    lengths = rng.integers(3, 8, n_items)
    words = vocab[rng.zipf(1.3, lengths.sum()) % len(vocab)]
    bounds = np.r_[0, np.cumsum(lengths)]
    titles = [" ".join(words[bounds[i]:bounds[i + 1]]) for i in range(n_items)]
    empty = pa.array([""] * n_items)
    pq.write_table(pa.table({"item_id": pa.array(np.char.add("i", np.arange(n_items).astype(str))),
                             "title": pa.array(titles), "categories": empty, "description": empty}),
                   out / "items.parquet")


def run(work: Path) -> None:
    from pipeline.artifacts import write_parquet
    from pipeline.data.kcore import KCoreConfig, kcore
    from pipeline.data.negatives import NegativesConfig, make_all
    from pipeline.data.split import split

    t0 = time.perf_counter()
    inter, users, items, stats = kcore(work / "interactions.parquet", work / "items.parquet", KCoreConfig(seed=1))
    write_parquet(inter, work / "kcore.parquet")
    t1 = time.perf_counter()
    print(f"kcore      {t1 - t0:7.1f} s  ({stats['users']:,} users, {stats['items']:,} items, "
          f"{stats['interactions']:,} interactions, {stats['kcore_iterations']} iterations)", flush=True)
    del inter
    parts, _ = split(work / "kcore.parquet")
    t2 = time.perf_counter()
    print(f"split      {t2 - t1:7.1f} s", flush=True)
    splits = {k: v.select(["uid", "iid"]) for k, v in parts.items()}
    del parts
    tables, nstats = make_all(splits, items["title"].to_pylist(), NegativesConfig(seed=1))
    t3 = time.perf_counter()
    print(f"negatives  {t3 - t2:7.1f} s  (mean text negatives in test top-K sets: "
          f"{nstats['test_topk']['mean_text_negatives']:.1f} of 19)", flush=True)
    print(f"total      {t3 - t0:7.1f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interactions", type=float, default=10e6)
    p.add_argument("--items", type=float, default=1e6)
    p.add_argument("--users", type=float, default=None, help="default: interactions / 40")
    p.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # internal: the timed child
    args = p.parse_args()
    if args.run:
        run(args.run)
        return
    n_inter, n_items = int(args.interactions), int(args.items)
    n_users = int(args.users or n_inter // 40)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate(Path(tmp), n_inter, n_items, n_users)
        print(f"generated {n_inter:,} interactions, {n_users:,} users, {n_items:,} items "
              f"in {time.perf_counter() - t:.1f} s (not timed below)", flush=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--run", tmp], check=True)
        wall = time.perf_counter() - t
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"k-core + split + negatives: wall {wall:.1f} s (incl. start-up), peak RSS {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
