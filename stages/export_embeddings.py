"""export_embeddings: a trained domain model's user/item tables -> data/embeddings/<ds>/<model>.safetensors.

Keys `user` [n_users, d] and `item` [n_items, d], float32, row k = dense id k (docs/design.md, "Data contracts");
metadata names the model, dim, dataset and a hash of the params it was trained with. For
sequential models the user row is the encoder state after the user's training history.
"""
from __future__ import annotations

import logging
import hashlib
import json

import torch

from pipeline import lineage, paths
from pipeline.artifacts import write_safetensors
from pipeline.models.weights import load_trained
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.eval.evaluator import EvalSets
from pipeline.config.params import load_params
from pipeline.models.trainer import domain_configs

log = logging.getLogger(__name__)


def main() -> None:
    p = dataset_parser(__doc__, ("model", "a domain model name under domain in params.yaml"))
    args = p.parse_args()
    model_cfg, _ = domain_configs(load_params(args.params), args.model)
    ev = EvalSets.load(args.dataset, candidates=False)
    model, trained = load_trained(args.dataset, args.model, model_cfg, ev.train())
    model.set_history(ev.history("valid"))  # train items only: what the LLM may see too
    with torch.no_grad():
        user, item = (t.float().contiguous() for t in model.tables())
    for name, table in (("user", user), ("item", item)):
        bad = (~torch.isfinite(table).all(dim=1)).nonzero()
        if len(bad):  # pre-loaded into the LLM, one NaN row made every new token NaN
            raise PipelineError(f"{paths.domain(args.dataset, args.model)}: the trained '{args.model}' has a "
                                f"non-finite {name} row {int(bad[0, 0])} ({len(bad)} in all); nothing exported, "
                                "re-run pretrain_domain")
    meta = {"model": args.model, "dataset": args.dataset, "dim": str(user.shape[1]),
            "params_hash": hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:16]}
    meta = lineage.stamp(meta, args.dataset, text=True)  # the id maps the rows index (checked by expand_vocab)
    out = paths.embeddings(args.dataset, args.model)
    write_safetensors({"user": user, "item": item}, out, meta)
    log.info(f"[export_embeddings] {out}: user {tuple(user.shape)}, item {tuple(item.shape)}")


if __name__ == "__main__":
    run(main)
