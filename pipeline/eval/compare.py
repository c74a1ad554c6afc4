"""Pair two rows' per-user outcomes: the paired test of any two runs, outside the report.

    python -m pipeline.eval.compare A.parquet B.parquet [--metric topk:HR@1 ...] [--json]

A and B are outcome files (data/outcomes/<kind>/<dataset>/<name>.parquet, written by every
evaluate stage; pipeline.eval.metrics.OUTCOME_SCHEMA), e.g. one model before and after a param
change (copy the first file aside before `dvc exp run`). Each metric is compared on the users both
files score on that protocol (the count and any users only one side has are printed): McNemar on
HR@k / Recall@k hits, a paired bootstrap on NDCG@k (pipeline.eval.stats.paired_test), diff = A - B
with its interval, and Holm's adjustment over the metrics compared.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.eval import metrics, stats
from pipeline.eval.report.inputs import read_outcomes

# top-K HR@1 is the papers' headline; NDCG@20 over all items is LightGCN's paper's metric
DEFAULT_METRICS = ("topk:HR@1", "topk:NDCG@10", "ranking:NDCG@10", "retrieval:NDCG@10", "retrieval:NDCG@20")


def parse_metric(spec: str) -> tuple[str, str]:
    """'protocol:NAME@k' -> (protocol, 'NAME@k'), refused with the value when malformed."""
    proto, _, metric = spec.partition(":")
    name, _, k = metric.partition("@")
    if not proto or name not in ("HR", "Recall", "NDCG") or not k.isdigit() or int(k) < 1:
        raise PipelineError(f"--metric {spec!r}: expected protocol:HR@k, protocol:Recall@k or protocol:NDCG@k "
                            "with k >= 1, e.g. topk:HR@1 or retrieval:NDCG@20")
    return proto, metric


def compare(a, b, specs: list[str], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
            names: tuple[str, str] = ("A", "B")) -> list[dict]:
    """One paired test per metric spec present in both outcome tables (a protocol neither or only
    one side has is reported as skipped), with Holm's p over the tests run."""
    rows = []
    for spec in specs:
        proto, metric = parse_metric(spec)
        ua, ub = metrics.outcome_users(a, proto), metrics.outcome_users(b, proto)
        users = np.intersect1d(ua, ub)
        row = {"protocol": proto, "metric": metric, "users_a": len(ua), "users_b": len(ub), "n": len(users)}
        if not len(users):
            rows.append({**row, "skipped": f"no users scored on {proto} by both" if len(ua) and len(ub)
                         else f"{' and '.join(n for n, u in zip(names, (ua, ub)) if not len(u))} has no {proto} rows"})
            continue
        x, y = (metrics.per_user_metric(t, proto, metric, users) for t in (a, b))
        t = stats.paired_test(x, y, confidence, n_boot, seed, names=names)
        rows.append({**row, "a": float(x.mean()), "b": float(y.mean()), "diff": t.diff, "low": t.low,
                     "high": t.high, "p": t.p_value, "method": t.method})
    tested = [r for r in rows if "p" in r]
    for r, p in zip(tested, stats.holm([r["p"] for r in tested])):
        r["p_holm"] = p
    return rows


def format_rows(rows: list[dict], names: tuple[str, str], confidence: float) -> str:
    lines = [f"A = {names[0]}", f"B = {names[1]}",
             f"{'protocol':<12}{'metric':<10}{'n':>6}{'A':>9}{'B':>9}{'A - B':>9}  {f'{confidence:.0%} interval':<20}"
             f"{'p':>10}{'p (Holm)':>10}  test"]
    partial: dict[tuple[int, int, int], list[str]] = {}
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['protocol']:<12}{r['metric']:<10}  skipped: {r['skipped']}")
            continue
        lines.append(f"{r['protocol']:<12}{r['metric']:<10}{r['n']:>6}{r['a']:>9.4f}{r['b']:>9.4f}{r['diff']:>+9.4f}"
                     f"  [{r['low']:+.4f}, {r['high']:+.4f}]{r['p']:>10.3g}{r['p_holm']:>10.3g}  {r['method']}")
        if r["users_a"] != r["n"] or r["users_b"] != r["n"]:
            protos = partial.setdefault((r["users_a"], r["users_b"], r["n"]), [])
            protos += [r["protocol"]] if r["protocol"] not in protos else []
    for (ua, ub, n), protos in partial.items():
        lines.append(f"{', '.join(protos)}: A scores {ua} users, B {ub}; compared on the {n} both score")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="outcomes Parquet of row A")
    p.add_argument("b", type=Path, help="outcomes Parquet of row B")
    p.add_argument("--metric", action="append", dest="metrics", metavar="PROTOCOL:NAME@K",
                   help=f"repeatable; default: {' '.join(DEFAULT_METRICS)}")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default .95)")
    p.add_argument("--bootstrap-samples", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the tests as JSON")
    args = p.parse_args(argv)
    for path in (args.a, args.b):
        if not path.is_file():
            raise PipelineError(f"{path}: no such outcomes file")
    if not 0 < args.confidence < 1:
        raise PipelineError(f"--confidence {args.confidence}: must be between 0 and 1")
    if args.bootstrap_samples < 100:
        raise PipelineError(f"--bootstrap-samples {args.bootstrap_samples}: must be >= 100")
    names = (str(args.a), str(args.b))
    rows = compare(read_outcomes(args.a), read_outcomes(args.b), args.metrics or list(DEFAULT_METRICS),
                   args.confidence, args.bootstrap_samples, args.seed, names)
    print(json.dumps({"a": names[0], "b": names[1], "confidence": args.confidence, "tests": rows}, indent=2)
          if args.json else format_rows(rows, names, args.confidence))


if __name__ == "__main__":
    from pipeline.cli import run

    run(main)
