"""build_prompts: prompt/answer Parquet per split and render -> data/prompts/<dataset>/<render>/
{train,valid,test}.parquet, and items.parquet (each item's pair suffix: the pair prompt of any
(row, item) is the row's pair_prefix + the item's pair_suffix, read by BDLM's DRS)."""
from __future__ import annotations

import logging
import numpy as np

from pipeline import paths
from pipeline.artifacts import atomic_dir, write_json, write_parquet
from pipeline.cli import dataset_parser, run
from pipeline.config.params import get, load_params, section
from pipeline.llm.prompts.build import build_all, item_tables
from pipeline.llm.prompts.config import PromptsConfig
from pipeline.llm.prompts.inputs import load_inputs
from pipeline.llm.prompts.schema import RENDERS, SPLITS
from stages.negatives import config as negatives_config

log = logging.getLogger(__name__)


def config(params: dict) -> PromptsConfig:
    s = section(params, "prompts")
    g = lambda key, typ: get(s, key, typ, "prompts")  # noqa: E731
    opt_int = (int, type(None))
    return PromptsConfig(seed=g("seed", int), history_len=g("history_len", int),
                         title_max_words=g("title_max_words", opt_int),
                         candidate_titles=g("candidate_titles", bool),
                         max_train_users=g("max_train_users", opt_int),
                         mlm_mask_prob=float(g("mlm_mask_prob", (int, float))),
                         train_targets_per_user=g("train_targets_per_user", int),
                         train_topk_negatives=g("train_topk_negatives", int),
                         popularity_alpha=float(g("popularity_alpha", (int, float))),
                         max_history_chars=g("max_history_chars", opt_int),
                         mlm_max_words=g("mlm_max_words", int),
                         mlm_max_items=g("mlm_max_items", opt_int),
                         train_users=g("train_users", str),
                         train_topk_sampler=g("train_topk_sampler", str),
                         user_token_at_answer=g("user_token_at_answer", bool))


def evaluated_users(params: dict, test) -> np.ndarray:
    """The users evaluate_llm scores (evaluate_llm.max_users / seed; pipeline.eval.evaluator.user_subset)."""
    from pipeline.eval.evaluator import user_subset

    sec = section(params, "evaluate_llm")
    return user_subset(test, get(sec, "max_users", (int, type(None)), "evaluate_llm"),
                       get(sec, "seed", int, "evaluate_llm"))


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    params = load_params(args.params)
    cfg = config(params)
    ds = args.dataset
    inputs = load_inputs(paths.split(ds), paths.negatives(ds), paths.kcore(ds) / "items.parquet")
    eval_users = evaluated_users(params, inputs.splits["test"]) if cfg.train_users == "eval_first" else None
    sampler = negatives_config(params) if cfg.train_topk_sampler == "eval" else None
    tables, metrics = build_all(inputs, cfg, ds, eval_users, sampler)
    for render, items in item_tables(inputs, cfg, ds).items():
        tables[render]["items"] = items
    root = paths.prompts(ds, RENDERS[0]).parent
    with atomic_dir(root) as out:  # both renders, all splits, or nothing
        for render in RENDERS:
            for s in (*SPLITS, "items"):
                write_parquet(tables[render][s], out / paths.prompts(ds, render).relative_to(root) / f"{s}.parquet")
    write_json(metrics, paths.metrics("prompts", ds))
    log.info(f"[build_prompts] {ds}: " + ", ".join(f"{s} {metrics['rows'][s]:,}" for s in SPLITS)
          + " rows per render; mean prompt chars (tokens) "
          + ", ".join(f"{s} {metrics['mean_prompt_chars'][s]['tokens']:.0f}" for s in SPLITS))


if __name__ == "__main__":
    run(main)
