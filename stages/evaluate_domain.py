"""evaluate_domain: score a trained domain model on every protocol, on the shared test sets
-> data/metrics/domain/<dataset>/<model>.json (every test user at the top level, and under
`llm_users` the seeded user subset the LLM and BDLM rows are scored on, evaluate_llm.max_users
/ seed, drawn from the test split) and its per-user outcomes data/outcomes/domain/<ds>/<model>.parquet."""
from __future__ import annotations

import logging
import json

import torch

from pipeline import paths
from pipeline.models.weights import load_trained
from pipeline.cli import dataset_parser, run
from pipeline.eval.evaluator import EvalSets, llm_users, outcomes, stats_config, write_scores
from pipeline.config.params import load_params
from pipeline.models.trainer import domain_configs

log = logging.getLogger(__name__)


def main() -> None:
    p = dataset_parser(__doc__, ("model", "a domain model name under domain in params.yaml"))
    args = p.parse_args()
    params = load_params(args.params)
    model_cfg, train_cfg = domain_configs(params, args.model)
    if train_cfg.threads is not None:
        torch.set_num_threads(train_cfg.threads)
    cfg = stats_config(params)
    ev = EvalSets.load(args.dataset)
    model, _ = load_trained(args.dataset, args.model, model_cfg, ev.train())
    summary = write_scores(outcomes(model, ev), cfg, {"dataset": args.dataset, "model": args.model},
                           paths.metrics_domain(args.dataset, args.model),
                           paths.outcomes("domain", args.dataset, args.model),
                           {"llm_users": llm_users(params, ev)})
    log.info(json.dumps({k: v for k, v in summary.items() if k not in ("ci", "llm_users")}))


if __name__ == "__main__":
    run(main)
