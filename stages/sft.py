"""sft: fine-tune the vocabulary-expanded LLM of one variant on its training prompts.

Reads data/llm/<ds>/vocab/<mode>/ and data/prompts/<ds>/<render>/train.parquet, writes the
model + tokenizer to data/llm/<ds>/sft/<variant>/ and the loss curve with wall time to
data/metrics/sft/<ds>/<variant>.json. Resumable: an interrupted run started again with the
same inputs continues from its last checkpoint (data/checkpoints/sft/...).
On GPUs: `accelerate launch --config_file configs/accelerate_zero3.yaml -m stages.sft <ds> <variant>`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline import lineage, paths
from pipeline.artifacts import atomic_dir, file_digest, read_json, write_json
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.eval.evaluator import EvalSets, llm_users
from pipeline.llm.base import load_base
from pipeline.llm.scoring import ScoreConfig, Scorer, topk_curve_metrics
from pipeline.llm.sft import SFTConfig, train, training_pairs
from pipeline.llm.tokens import new_tokens
from pipeline.config.params import get, load_params, section


def variant_settings(params: dict, variant: str) -> tuple[str, bool, float]:
    """(vocab mode, aux on, alignment-loss weight) of an llm.variant entry, checked."""
    llm = section(params, "llm")
    table = get(llm, "variant", dict, "llm")
    if variant not in table:
        raise PipelineError(f"params.yaml: unknown variant '{variant}': llm.variant has {sorted(table)}")
    v = table[variant]
    mode = get(v, "vocab", str, f"llm.variant.{variant}")
    modes = get(llm, "vocab_modes", list, "llm")
    if mode not in modes:
        raise PipelineError(f"params.yaml: llm.variant.{variant}.vocab is '{mode}', not one of llm.vocab_modes {modes}")
    # range and vocab of `align` are the config layer's (load_params): absent means off
    return mode, get(v, "aux", bool, f"llm.variant.{variant}"), float(v.get("align") or 0.0)


SFT_MIN = {"steps": 1, "batch_size": 1, "grad_accum": 1, "warmup_steps": 0, "max_len": 8, "checkpoint_every": 1,
           "lora_r": 1, "weight_decay": 0, "seed": 0, "bucket": 1, "curve_every": 0}


def sft_config(params: dict) -> tuple[SFTConfig, dict[str, float]]:
    sec = section(params, "sft")
    fields = {f: type(v) for f, v in SFTConfig().section().items()}
    values = {}
    for key, typ in fields.items():
        values[key] = get(sec, key, (int, float) if typ is float else typ, "sft")
    # degenerate values are refused before the stage touches its output: steps 0 swapped an
    # untrained model into data/llm/<ds>/sft/ and then crashed
    for key, low in SFT_MIN.items():
        if isinstance(values[key], (int, float)) and not values[key] >= low:
            raise PipelineError(f"params.yaml: sft.{key} = {values[key]!r} must be >= {low}")
    for key in ("lr", "row_lr"):
        if not (values[key] > 0 and math.isfinite(values[key])):
            raise PipelineError(f"params.yaml: sft.{key} = {values[key]!r} must be a finite number > 0")
    weights = get(sec, "task_weights", dict, "sft")
    for task, w in weights.items():
        get(weights, task, (int, float), "sft.task_weights")
        if w < 0:
            raise PipelineError(f"params.yaml: sft.task_weights.{task} must be >= 0, got {w}")
    return SFTConfig(**values), weights


def curve_evaluator(params: dict, ds: str, mode: str, cfg: SFTConfig, tokenizer):
    """The learning curve's y: valid top-K HR@1 / NDCG@20 on the users evaluate_llm scores (the
    same users for every variant), fp32 as evaluate_llm; None when sft.curve_every is 0."""
    if not cfg.curve_every:
        return None
    ev = EvalSets.load(ds, candidates=False)
    valid = pq.read_table(paths.prompts(ds, render(mode)) / "valid.parquet")
    rows = valid.filter(pc.and_(pc.equal(valid["task"], "topk"),
                                pc.is_in(valid["uid"], value_set=pa.array(llm_users(params, ev), pa.int32()))))
    score = ScoreConfig(batch_size=get(section(params, "evaluate_llm"), "batch_size", int, "evaluate_llm"),
                        max_len=cfg.max_len, mixed_precision="no")
    return lambda model: topk_curve_metrics(Scorer(model, tokenizer, score), rows, ev.n_items,
                                            mode != "text")


def render(mode: str) -> str:
    return "text" if mode == "text" else "tokens"


def main() -> None:
    p = dataset_parser(__doc__, ("variant", "a name under llm.variant in params.yaml"))
    args = p.parse_args()
    params = load_params(args.params)
    mode, aux, align = variant_settings(params, args.variant)
    cfg, weights = sft_config(params)
    cfg = dataclasses.replace(cfg, align_weight=align)
    vocab_dir = paths.vocab_llm(args.dataset, mode)
    prompts_file = paths.prompts(args.dataset, render(mode)) / "train.parquet"
    for need, stage in ((vocab_dir, f"expand_vocab@{args.dataset}-{mode}"), (prompts_file, f"build_prompts@{args.dataset}")):
        if not need.exists():
            raise PipelineError(f"{need} missing: run `dvc repro {stage}` first")
    vocab = read_json(vocab_dir / "vocab.json")
    ids = lineage.check(vocab_dir / "vocab.json", vocab, args.dataset, f"expand_vocab@{args.dataset}-{mode}")
    prompts, answers = training_pairs(pq.read_table(prompts_file), weights, aux, cfg.seed)
    model, tokenizer = load_base(vocab_dir)
    new_ids = (tokenizer.convert_tokens_to_ids(new_tokens(vocab["n_users"], vocab["n_items"]))
               if mode != "text" else [])
    # resume only into a run with the very same inputs: the identity hashes params and input files
    # (the checkpoint folder is keyed by it; pipeline/checkpoint.py refuses any other)
    identity = hashlib.sha256(json.dumps(
        {"cfg": cfg.__dict__, "weights": weights, "aux": aux, "mode": mode, "prompts": file_digest(prompts_file)[0],
         "model": [file_digest(f)[0] for f in sorted(vocab_dir.glob("*.safetensors"))]},
        sort_keys=True).encode()).hexdigest()
    checkpoints = paths.checkpoints("sft", args.dataset, args.variant, identity[:16])
    checkpoints.mkdir(parents=True, exist_ok=True)
    print(f"[sft] {args.dataset}/{args.variant}: vocab={mode} aux={aux} align={align}, {len(prompts)} samples, "
          f"{cfg.steps} steps x {cfg.batch_size} x {cfg.grad_accum}")
    start = time.perf_counter()
    # under `accelerate launch` every process trains, the main one alone writes (train() saves
    # there only, after gathering the weights from all of them)
    main_process = int(os.environ.get("RANK", "0")) == 0  # set by torchrun, accelerate and deepspeed
    out = paths.sft(args.dataset, args.variant)
    with atomic_dir(out) if main_process else nullcontext(out) as tmp:
        _, history, stats = train(model, tokenizer, prompts, answers, cfg, checkpoints=checkpoints,
                                  new_token_ids=new_ids, output_dir=tmp,
                                  evaluate=curve_evaluator(params, args.dataset, mode, cfg, tokenizer),
                                  user_token_ids=new_ids[:vocab["n_users"]], identity=identity)
        if main_process:
            write_json({"variant": args.variant, "vocab": mode, "aux": aux, "align": align, "base": vocab.get("base"),
                        "n_users": vocab["n_users"], "n_items": vocab["n_items"], lineage.KEY: ids},
                       tmp / "variant.json")
    if not main_process:
        return
    shutil.rmtree(checkpoints, ignore_errors=True)
    write_json({"dataset": args.dataset, "variant": args.variant, "vocab": mode, "aux": aux, "align": align,
                "train_seconds": round(time.perf_counter() - start, 1), "samples": stats["samples"],
                "prompts_truncated": stats["truncated"], "precision": stats["precision"], "final_loss": history[-1]["loss"],
                "curve": [{k: h[k] for k in ("step", "samples", "valid_topk_HR@1", "valid_topk_NDCG@20")}
                          for h in history if "samples" in h],
                "history": history},
               paths.metrics_sft(args.dataset, args.variant))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run(main)
