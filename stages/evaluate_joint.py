"""evaluate_joint: score one BDLM joint-training experiment, both of its models.

BDLM-llm: the jointly trained LLM, scored by pipeline.llm.scoring.evaluate_llm on every
protocol its prompts hold. BDLM-drs: the domain model fed with the LLM's feature h, on
interaction prediction (threshold chosen on valid) and top-K, h read from the pair prompt of
every scored (user, item): one h per candidate (pipeline.bdlm.features reads the user's
prefix once). Both on the seeded user subset stages.evaluate_llm scores
(evaluate_llm.max_users / seed), so every LLM number in the project is on the same users.

Reads data/joint/<ds>/<experiment>/, data/prompts/<ds>/<render>/{valid,test,items}.parquet
(render: tokens, or text for a w/o ET experiment) and data/split/<ds>/; writes data/metrics/joint/<ds>/<experiment>.json:
{"dataset", "experiment", "domain_model", "lambda", "users_scored", "llm": {...}, "drs": {...}}
(each side with intervals) and the per-user outcomes data/outcomes/joint/<ds>/<experiment>-{llm,drs}.parquet.
"""
from __future__ import annotations

import logging
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import lineage, paths
from pipeline.artifacts import read_json, write_json, write_parquet
from pipeline.bdlm import PairPrompts, evaluate_drs, load_drs, pair_features
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.eval.evaluator import METRICS_SCHEMA, EvalSets, json_safe, llm_users, stats_config
from pipeline.eval.metrics import summarize
from pipeline.llm.base import load_base
from pipeline.llm.scoring import ScoreConfig, Scorer, evaluate_llm
from pipeline.models.registry import model_class
from pipeline.config.params import get, load_params, section
from stages.joint_train import joint_dir

log = logging.getLogger(__name__)


def main() -> None:
    p = dataset_parser(__doc__, ("experiment", "a name under joint.experiment in params.yaml"))
    args = p.parse_args()
    ds, name = args.dataset, args.experiment
    params = load_params(args.params)
    sec = section(params, "evaluate_llm")
    folder = joint_dir(ds, name)
    if not (folder / "config.json").exists():
        raise PipelineError(f"{folder}: no joint-trained '{name}'; run `dvc repro joint_train@{ds}-{name}`")
    config = read_json(folder / "config.json")
    lineage.check(folder / "config.json", config, ds, f"joint_train@{ds}-{name}")
    max_len, pooling = config["joint"]["max_len"], config["joint"]["pooling"]
    prompts = paths.prompts(ds, config.get("render", "tokens"))
    valid, test = (pq.read_table(prompts / f"{s}.parquet") for s in ("valid", "test"))
    items = pq.read_table(prompts / "items.parquet")
    ev = EvalSets.load(ds, candidates=False)
    users = llm_users(params, ev)
    keep = pa.array(users, pa.int32())
    valid, test = (t.filter(pc.is_in(t["uid"], value_set=keep)) for t in (valid, test))

    if (ev.n_users, ev.n_items) != (config["n_users"], config["n_items"]):
        raise PipelineError(f"{folder / 'config.json'}: trained on {config['n_users']} users x {config['n_items']} "
                            f"items, the dataset now has {ev.n_users} x {ev.n_items}; re-run joint_train")
    known = ev.known("test")
    model, tokenizer = load_base(folder / "llm")
    cfg = ScoreConfig(batch_size=get(sec, "batch_size", int, "evaluate_llm"), max_len=max_len,
                      mixed_precision=get(sec, "mixed_precision", str, "evaluate_llm"))
    scorer = Scorer(model, tokenizer, cfg)
    llm_table, extra = evaluate_llm(scorer, valid, test, ev.n_items, known, tokens=config.get("render", "tokens") == "tokens")
    dom_cfg = {k: v for k, v in config["domain_config"].items() if k != "train"}
    domain = model_class(config["domain_model"])(ev.n_users, ev.n_items, dom_cfg)
    drs = load_drs(folder / "drs.safetensors", domain, config["hidden_size"], ev.train())
    pairs = PairPrompts(tokenizer, items["pair_suffix"].to_pylist(), max_len)
    drs_table = evaluate_drs(drs, lambda prefixes, its: pair_features(model, pairs, pairs.prefixes(prefixes), its, pooling,
                                                                      cfg.mixed_precision), valid, test)
    stats = stats_config(params)
    llm, drs_metrics = ({**summarize(t, None, stats), **(extra if side == "llm" else {})}
                        for side, t in (("llm", llm_table), ("drs", drs_table)))
    out = {"dataset": ds, "experiment": name, "domain_model": config["domain_model"], "lambda": config["lambda"],
           "vocab": config.get("vocab", "pe"), "drs_selected": config.get("drs_selected"),
           "schema": METRICS_SCHEMA, "confidence": stats.confidence, "users_scored": int(len(users)),
           "llm": llm, "drs": drs_metrics}
    write_parquet(llm_table, paths.outcomes("joint", ds, f"{name}-llm"))
    write_parquet(drs_table, paths.outcomes("joint", ds, f"{name}-drs"))
    write_json(json_safe(out), paths.metrics_joint(ds, name))
    log.info(json.dumps({side: {k: v for k, v in out[side].items() if k != "ci"} for side in ("llm", "drs")}))


if __name__ == "__main__":
    run(main)
