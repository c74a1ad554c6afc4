"""evaluate_llm: score one fine-tuned LLM variant on every protocol its prompts hold.

Reads data/llm/<ds>/sft/<variant>/ and data/prompts/<ds>/<render>/{valid,test}.parquet,
writes data/metrics/llm/<ds>/<variant>.json (metrics with intervals) and
data/outcomes/llm/<ds>/<variant>.parquet (per-user outcomes, for the report's paired tests).
Only a seeded subset of test users is scored (evaluate_llm.max_users, drawn from the test
split), the same one for every variant and every domain row; the metrics name its size.
"""
from __future__ import annotations

import logging
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import lineage, paths
from pipeline.artifacts import read_json
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.eval.evaluator import EvalSets, llm_users, stats_config, write_scores
from pipeline.llm.base import load_base
from pipeline.llm.scoring import ScoreConfig, Scorer, evaluate_llm
from pipeline.config.params import get, load_params, section
from stages.sft import render, sft_config, variant_settings

log = logging.getLogger(__name__)


def main() -> None:
    p = dataset_parser(__doc__, ("variant", "a name under llm.variant in params.yaml"))
    args = p.parse_args()
    params = load_params(args.params)
    mode, _, _ = variant_settings(params, args.variant)
    sft_cfg, _ = sft_config(params)
    sec = section(params, "evaluate_llm")
    cfg = ScoreConfig(batch_size=get(sec, "batch_size", int, "evaluate_llm"), max_len=sft_cfg.max_len,
                      mixed_precision=get(sec, "mixed_precision", str, "evaluate_llm"))
    model_dir = paths.sft(args.dataset, args.variant)
    if not (model_dir / "variant.json").exists():
        raise PipelineError(f"{model_dir}: no fine-tuned '{args.variant}'; run `dvc repro sft@{args.dataset}-{args.variant}`")
    lineage.check(model_dir / "variant.json", read_json(model_dir / "variant.json"), args.dataset,
                  f"sft@{args.dataset}-{args.variant}")
    folder = paths.prompts(args.dataset, render(mode))
    valid, test = (pq.read_table(folder / f"{s}.parquet") for s in ("valid", "test"))
    ev = EvalSets.load(args.dataset, candidates=False)  # the same loader and masks as the domain models
    users = llm_users(params, ev)
    keep = pa.array(users, pa.int32())
    valid, test = (t.filter(pc.is_in(t["uid"], value_set=keep)) for t in (valid, test))
    model, tokenizer = load_base(model_dir)
    table, extra = evaluate_llm(Scorer(model, tokenizer, cfg), valid, test, ev.n_items, ev.known("test"),
                                tokens=mode != "text")
    summary = write_scores(table, stats_config(params),
                           {"dataset": args.dataset, "variant": args.variant, "vocab": mode, **extra},
                           paths.metrics_llm(args.dataset, args.variant),
                           paths.outcomes("llm", args.dataset, args.variant))
    log.info(json.dumps({k: v for k, v in summary.items() if k != "ci"}))


if __name__ == "__main__":
    run(main)
