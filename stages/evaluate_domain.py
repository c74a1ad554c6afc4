"""evaluate_domain: score a trained domain model on every protocol, on the shared test sets
-> data/metrics/domain/<dataset>/<model>.json: every test user at the top level, and under
`llm_users` the same protocols on the seeded user subset the LLM and BDLM rows are scored on
(evaluate_llm.max_users / seed, drawn from data/prompts/<ds>/tokens/test.parquet), so the
report compares every row on the same users."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import torch

from pipeline import paths
from pipeline.artifacts import write_json
from pipeline.checkpoint import load_trained
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.evaluation import EvalSets, evaluate, user_subset
from pipeline.params import get, load_params, section
from pipeline.train_domain import domain_configs


def main() -> None:
    p = dataset_parser(__doc__, ("model", "a domain model name under domain in params.yaml"))
    args = p.parse_args()
    params = load_params(args.params)
    model_cfg, _ = domain_configs(params, args.model)
    ev = EvalSets.load(args.dataset)
    model, _ = load_trained(args.dataset, args.model, model_cfg, ev.train())
    result = evaluate(model, ev)
    sec = section(params, "evaluate_llm")
    max_users, seed = get(sec, "max_users", (int, type(None)), "evaluate_llm"), get(sec, "seed", int, "evaluate_llm")
    prompts = paths.prompts(args.dataset, "tokens") / "test.parquet"
    if not prompts.exists():
        raise PipelineError(f"{prompts} missing: run `dvc repro build_prompts@{args.dataset}` first")
    users = user_subset(pq.read_table(prompts, columns=["uid"]), max_users, seed)
    subset = {"users_scored": int(len(users)), "seed": seed, **evaluate(model, ev.restrict(users))}
    write_json({"dataset": args.dataset, "model": args.model, **result, "llm_users": subset},
               paths.metrics_domain(args.dataset, args.model))
    print(json.dumps(result))


if __name__ == "__main__":
    torch.set_num_threads(2)
    run(main)
