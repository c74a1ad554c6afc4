"""evaluate_domain: score a trained domain model on every protocol, on the shared test sets
-> data/metrics/domain/<dataset>/<model>.json."""
from __future__ import annotations

import json

import torch

from pipeline import paths
from pipeline.artifacts import write_json
from pipeline.checkpoint import load_trained
from pipeline.cli import dataset_parser, run
from pipeline.evaluation import EvalSets, evaluate
from pipeline.params import load_params
from pipeline.train_domain import domain_configs


def main() -> None:
    p = dataset_parser(__doc__, ("model", "a domain model name under domain in params.yaml"))
    args = p.parse_args()
    model_cfg, _ = domain_configs(load_params(args.params), args.model)
    ev = EvalSets.load(args.dataset)
    model, _ = load_trained(args.dataset, args.model, model_cfg, ev.train())
    result = evaluate(model, ev)
    write_json({"dataset": args.dataset, "model": args.model, **result},
               paths.metrics_domain(args.dataset, args.model))
    print(json.dumps(result))


if __name__ == "__main__":
    torch.set_num_threads(2)
    run(main)
