"""joint_train: BDLM deep mutual learning of the pre-loaded LLM and a domain model (DRS).

Reads data/llm/<ds>/vocab/pe/ (LLM with <uid_k>/<iid_k> pre-loaded, vocab.json),
data/domain/<ds>/<model>/ (the pretrained domain model of the experiment),
data/prompts/<ds>/tokens/train.parquet and data/split/<ds>/; writes
data/joint/<ds>/<experiment>/ (llm/ model + tokenizer, drs.safetensors, sharing.safetensors,
config.json) and data/metrics/joint_train/<ds>/<experiment>.json (loss curves, wall time).
An experiment is a `joint.experiment.<name>` entry: its domain model, optionally its own
lambda and any joint.train key. Resumable: a run started again with the same params and
inputs continues from its last checkpoint (data/checkpoints/joint/...); a checkpoint written
under other params is refused, never overwritten.

On GPUs: `accelerate launch --config_file configs/accelerate_zero3.yaml -m stages.joint_train
<ds> <experiment>` (DeepSpeed ZeRO-3 for the LLM; the DRS and M beside it on the CPU).
"""
from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline import lineage, paths
from pipeline.artifacts import atomic_dir, file_digest, read_json, write_json, write_safetensors
from pipeline.bdlm import (DRS, JointConfig, JointData, JointTrainer, LLMRows, SelectionSet, Sharing,
                           check_id_spaces, initial_projection, save_drs)
from pipeline.models.weights import load_trained
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.eval.evaluator import EvalSets, llm_users
from pipeline.llm.base import is_seq2seq, load_base
from pipeline.config.params import get, load_params, section
from pipeline.models.trainer import domain_configs
from stages.sft import render

JOINT_MODELS = ("lightgcn", "ncf")  # BDLM's two (paper Tables 3 and 4)
# The LLM an experiment starts from (joint.experiment.<name>.vocab, checked by the config
# layer): BDLM's pre-loaded tokens (pe); the ablations w/o PE (randomly initialised tokens,
# rand) and w/o ET (ids as plain text, no tokens and no M: text) go through the same trainer
# with the same budget, so each changes exactly one thing. Its prompts: stages.sft.render.


def joint_dir(ds: str, experiment: str) -> Path:
    return paths.joint(ds, experiment)


def metrics_joint_train(ds: str, experiment: str) -> Path:
    return paths.metrics_joint_train(ds, experiment)


def joint_settings(params: dict, experiment: str) -> tuple[JointConfig, str, dict[str, float], bool, str]:
    """(config, domain model, LLM task weights, aux, vocab) of one joint.experiment entry, checked.
    The entry's `lambda` overrides joint.lambda, its other keys override joint.train."""
    sec = section(params, "joint")
    table = get(sec, "experiment", dict, "joint")
    if experiment not in table:
        raise PipelineError(f"params.yaml: unknown joint experiment '{experiment}': joint.experiment has {sorted(table)}")
    where = f"joint.experiment.{experiment}"
    exp = table[experiment] or {}
    model = get(exp, "model", str, where)
    if model not in JOINT_MODELS:
        raise PipelineError(f"params.yaml: {where}.model is '{model}'; joint training supports {list(JOINT_MODELS)} "
                            "(dvc.yaml lists their checkpoints as joint_train's deps)")
    lam_src = exp if "lambda" in exp else sec
    lam_name = f"{where}.lambda" if "lambda" in exp else "joint.lambda"
    lam = get(lam_src, "lambda", (int, float), where if "lambda" in exp else "joint")
    if not lam >= 0:
        raise PipelineError(f"params.yaml: {lam_name} (the mutual-learning weight) must be >= 0, got {lam}")
    vocab = exp.get("vocab", "pe")
    train = {**get(sec, "train", dict, "joint"),
             **{k: v for k, v in exp.items() if k not in ("model", "lambda", "vocab")}}
    values = {}
    for key, default in asdict(JointConfig()).items():
        if key == "lam":
            continue
        src = where if key in exp else "joint.train"
        values[key] = get(train, key, (int, float) if isinstance(default, float) else type(default), src)
    weights = get(train, "task_weights", dict, "joint.train")
    for task, w in weights.items():
        if get(weights, task, (int, float), "joint.train.task_weights") < 0:
            raise PipelineError(f"params.yaml: joint.train.task_weights.{task} must be >= 0, got {w}")
    aux = get(train, "aux", bool, "joint.train")
    unknown = set(train) - set(values) - {"task_weights", "aux"}
    if unknown:
        raise PipelineError(f"params.yaml: unknown keys {sorted(unknown)} in joint.train / {where}")
    return JointConfig(lam=float(lam), **values).check(), model, weights, aux, vocab


def inputs(ds: str, model: str, vocab: str) -> dict[str, Path]:
    prompts = paths.prompts(ds, render(vocab))
    need = {"vocab": paths.vocab_llm(ds, vocab) / "vocab.json",
            "domain": paths.domain(ds, model) / "config.json",
            "prompts": prompts / "train.parquet", "valid": prompts / "valid.parquet", "items": prompts / "items.parquet",
            "split": paths.split(ds) / "train.parquet"}
    stage = {"vocab": f"expand_vocab@{ds}-{vocab}", "domain": f"pretrain_domain@{ds}-{model}",
             "prompts": f"build_prompts@{ds}", "valid": f"build_prompts@{ds}", "items": f"build_prompts@{ds}",
             "split": f"split@{ds}"}
    for key, path in need.items():
        if not path.exists():
            raise PipelineError(f"{path} missing: run `dvc repro {stage[key]}` first")
    return need


def main() -> None:
    p = dataset_parser(__doc__, ("experiment", "a name under joint.experiment in params.yaml"))
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (checkpointed)")
    args = p.parse_args()
    params = load_params(args.params)
    ds, name = args.dataset, args.experiment
    cfg, model_name, weights, aux, vocab_mode = joint_settings(params, name)
    files = inputs(ds, model_name, vocab_mode)
    vocab, domain_cfg = read_json(files["vocab"]), read_json(files["domain"])
    tokens = vocab_mode != "text"
    if tokens:
        check_id_spaces(vocab, str(files["vocab"]), domain_cfg, str(files["domain"]))
    ids = lineage.check(files["vocab"], vocab, ds, f"expand_vocab@{ds}-{vocab_mode}")
    ev = EvalSets.load(ds, candidates=False)
    domain, trained = load_trained(ds, model_name, domain_configs(params, model_name)[0], ev.train())
    vocab_dir = files["vocab"].parent
    llm, tokenizer = load_base(vocab_dir)
    hidden = int(llm.get_input_embeddings().weight.shape[1])
    if tokens:  # M and the mutual-learning loss need the LLM's user/item rows
        rows = LLMRows(llm, vocab["first_user_token_id"], vocab["first_item_token_id"], vocab["n_users"],
                       vocab["n_items"])
        proj, scale = initial_projection(domain, rows, int(vocab.get("seed", cfg.seed)))
        sharing = Sharing(rows.table("user"), rows.table("item"))
    else:  # w/o ET: no id tokens, so no M; the DRS still reads h
        rows, proj, scale, sharing = None, None, None, None
    drs = DRS(domain, hidden, proj)
    items = pq.read_table(files["items"])
    data = JointData.build(pq.read_table(files["prompts"]), items["pair_suffix"].to_pylist(), tokenizer,
                           is_seq2seq(llm), weights, aux, cfg)
    users = pa.array(llm_users(params, ev), pa.int32())
    valid = pq.read_table(files["valid"])
    selection = SelectionSet.build(valid.filter(pc.is_in(valid["uid"], value_set=users)), data.pairs)
    digests = {key: file_digest(files[key])[0] for key in ("prompts", "valid", "items", "split")}
    digests.update({"llm": [file_digest(f)[0] for f in sorted(vocab_dir.glob("*.safetensors"))],
                    "domain": file_digest(files["domain"].parent / "model.safetensors")[0],
                    "selection_users": hashlib.sha256(np.asarray(users).tobytes()).hexdigest()})
    params_hash = cfg.params_hash({"model": model_name, "vocab": vocab_mode, "weights": weights, "aux": aux,
                                   **digests})
    checkpoints = paths.checkpoints("joint", ds, name, params_hash[:16])
    trainer = JointTrainer(llm, tokenizer, drs, sharing, rows, data, cfg, params_hash, train=ev.train(),
                           selection=selection)
    print(f"[joint_train] {ds}/{name}: domain={model_name} vocab={vocab_mode} lambda={cfg.lam} share={cfg.share} "
          f"pooling={cfg.pooling}, {len(data.llm_enc.input_ids)} instances, {cfg.steps} steps x {cfg.batch_size} "
          f"(+{cfg.drs_per_llm - 1} DRS steps x {cfg.drs_batch_size} on a pool of {len(trainer.pool)} whose h is "
          f"refreshed every {cfg.refresh_every} steps); selection on {len(selection.users)} valid users; "
          f"projection: {drs.projection}")
    start = time.perf_counter()
    history = trainer.run(checkpoints, stop_after=args.stop_after)
    main_process = trainer.acc.is_main_process
    if trainer.step < cfg.steps:
        if main_process:
            print(f"[joint_train] stopped after {trainer.step} steps (checkpoint in {checkpoints}); nothing written")
        return
    llm_state = trainer.llm_state_dict()  # on every process: ZeRO-3 gathers the shards
    if not main_process:
        return
    seconds = round(time.perf_counter() - start, 1)
    config = {"dataset": ds, "experiment": name, "domain_model": model_name, "domain_config": trained,
              "vocab": vocab_mode, "render": render(vocab_mode),
              "lambda": cfg.lam, "joint": asdict(cfg), "task_weights": weights, "aux": aux,
              "n_users": ev.n_users, "n_items": ev.n_items, "hidden_size": hidden,
              "domain_dim": drs.dim, "pair_feature_dim": drs.feature_dim, "projection": drs.projection,
              "projection_init_scale": scale, "llm_preloaded_from": vocab.get("preload_from"),
              "llm_vocab_projection": vocab.get("projection"),
              "sharing": ("buffers in the LLM hidden space, initialised from the LLM's <uid>/<iid> rows, written "
                          "by both sides (Algorithm 1)") if tokens else "none (no id tokens: w/o ET)",
              "drs_selected": trainer.selected,
              "params_hash": params_hash, "base": vocab.get("base"), lineage.KEY: ids}
    meta = {"dataset": ds, "experiment": name, "domain_model": model_name, "pooling": cfg.pooling,
            "projection": drs.projection, "params_hash": params_hash}
    with atomic_dir(joint_dir(ds, name)) as tmp:
        llm.save_pretrained(tmp / "llm", state_dict=llm_state)
        tokenizer.save_pretrained(tmp / "llm")
        save_drs(drs, tmp / "drs.safetensors", meta)
        if sharing is not None:
            write_safetensors({"user": sharing.user, "item": sharing.item}, tmp / "sharing.safetensors", meta)
        write_json(config, tmp / "config.json")
    shutil.rmtree(checkpoints, ignore_errors=True)
    writes = {side: sum(1 for w in (sharing.writes if sharing else []) if w[1] == side) for side in ("llm", "drs")}
    write_json({"dataset": ds, "experiment": name, "domain_model": model_name, "vocab": vocab_mode, "lambda": cfg.lam,
                "projection": drs.projection, "precision": trainer.precision, "train_seconds": seconds,
                "steps": cfg.steps,
                "instances": len(data.llm_enc.input_ids), "drs_pool": len(trainer.pool),
                "drs_selected": trainer.selected,
                "prompts_truncated": data.llm_enc.truncated, "sharing_writes_this_run": writes,
                "final": {k: v for k, v in history[-1].items() if k != "step"}, "history": history},
               metrics_joint_train(ds, name))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run(main)
