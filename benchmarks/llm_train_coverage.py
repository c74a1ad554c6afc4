"""What one SFT run trains on: samples per task and evaluated users covered (a benchmark).

    python benchmarks/llm_train_coverage.py                      # params.yaml, ml-100k
    python benchmarks/llm_train_coverage.py --set prompts.train_users=all --set prompts.max_train_users=300
    python benchmarks/llm_train_coverage.py --profile paper-ml1m --dataset ml-1m

Builds the training prompts in memory exactly as build_prompts does (from data/split,
data/negatives and data/kcore of the dataset), takes the rows sft's `training_pairs` keeps for
a variant (sft.task_weights, aux on/off) and the rows its first `sft.steps` optimizer steps
visit (`batch_indices`), and prints: rows per task in the table, samples per task seen, and
how many of the users evaluate_llm scores (evaluate_llm.max_users / seed) appear in a seen
training prompt at all and in a seen prompt of each scored task. Needs no model.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths  # noqa: E402
from pipeline.llm.sft import SFTConfig, batch_indices, training_pairs  # noqa: E402
from pipeline.config.params import apply_overrides, parse_overrides, read_yaml, validate_params  # noqa: E402
from pipeline.llm.prompts.build import build_specs  # noqa: E402
from pipeline.llm.prompts.inputs import item_texts, load_inputs  # noqa: E402
from pipeline.llm.prompts.render import Renderer, domain_for, render_table  # noqa: E402
from stages.build_prompts import config as prompts_config, evaluated_users  # noqa: E402
from stages.negatives import config as negatives_config  # noqa: E402

SCORED = ("topk", "retrieval", "interaction", "rating")


def coverage(params: dict, dataset: str, aux: bool = True) -> dict:
    cfg = prompts_config(params)
    inputs = load_inputs(paths.split(dataset), paths.negatives(dataset), paths.kcore(dataset) / "items.parquet")
    users = evaluated_users(params, inputs.splits["test"])
    specs, stats = build_specs(inputs, cfg, users if cfg.train_users == "eval_first" else None,
                               negatives_config(params) if cfg.train_topk_sampler == "eval" else None)
    titles, _ = item_texts(inputs.items, -1, "items.parquet")
    table, _ = render_table(specs["train"], Renderer(titles, domain_for(dataset), cfg, tokens=True))
    sft = params["sft"]
    # training_pairs returns prompts only: rerun its selection on row numbers to know each kept row
    import pyarrow as pa

    numbered = pa.table({"task": table["task"], "prompt": pa.array([str(i) for i in range(table.num_rows)]),
                         "answer": table["answer"]})
    rows, _ = training_pairs(numbered, sft["task_weights"], aux, sft["seed"])
    rows = np.asarray([int(r) for r in rows])
    scfg = SFTConfig(steps=sft["steps"], batch_size=sft["batch_size"], grad_accum=sft.get("grad_accum", 1),
                     seed=sft["seed"])
    seen = [int(rows[i]) for step in range(scfg.steps) for micro in range(scfg.grad_accum)
            for i in batch_indices(len(rows), scfg, step, micro)]
    task = np.asarray(table["task"].to_pylist(), dtype=object)
    uid = table["uid"].to_numpy()
    evaluated = {int(u) for u in users}
    per_task_users = {t: {int(uid[r]) for r in seen if task[r] == t} & evaluated for t in SCORED}
    return {"dataset": dataset, "aux": aux, "train_table_rows": dict(Counter(task.tolist())),
            "sft_pairs": int(len(rows)), "samples_seen": len(seen), "distinct_rows_seen": len(set(seen)),
            "seen_per_task": dict(Counter(task[r] for r in seen)),
            "evaluated_users": len(evaluated),
            "evaluated_users_in_train_table": len({int(u) for u in uid} & evaluated),
            "evaluated_users_seen": len({int(uid[r]) for r in seen} & evaluated),
            "evaluated_users_seen_per_scored_task": {t: len(v) for t, v in per_task_users.items()},
            "prompts_stats": {k: v for k, v in stats.items() if k.startswith(("train", "evaluated"))}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", default=None, help="apply profiles/<name>.yaml first (pipeline.config.profile)")
    p.add_argument("--set", action="append", default=[], help="dotted.key=yaml-value override")
    p.add_argument("--no-aux", action="store_true", help="the variant without the auxiliary tasks")
    args = p.parse_args()
    params = read_yaml(Path(args.params).read_text())
    if args.profile:
        from pipeline.config import profile

        params = apply_overrides(params, profile.load(args.profile, Path(__file__).resolve().parents[1] / "profiles"))
    params = apply_overrides(params, parse_overrides(args.set))
    validate_params(params, args.params)
    print(json.dumps(coverage(params, args.dataset, aux=not args.no_aux), indent=1))


if __name__ == "__main__":
    main()
