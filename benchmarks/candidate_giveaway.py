"""Can the candidate sets be solved without the user? Both text anchors side by side.

Builds the valid/test candidate sets of a dataset in memory with `negatives.text_anchor`
history (the default) and positive (the papers' sampler), with every other negatives param
from params.yaml, and prints the HR@1 of each user-agnostic text scorer (pipeline.eval.floors)
with its Wilson interval and chance. With --models it also scores the trained domain models
(data/domain/<ds>/<model>, from `dvc repro`) on the test top-K sets of both anchors, so the
old protocol's numbers stand next to the new ones for the same weights, and tests each model
against the user-agnostic centrality + popularity scorer and against MostPop (McNemar, same users). Run after the split
(and pretrain_domain) stages:

    python benchmarks/candidate_giveaway.py ml-100k --models mostpop lightgcn sasrec
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.eval import floors  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.eval.metrics import candidate_matrix  # noqa: E402
from pipeline.data.negatives import make_all, text_vectors  # noqa: E402
from pipeline.config.params import load_params  # noqa: E402
from pipeline.data.split import SPLITS  # noqa: E402
from pipeline.eval.metrics import positive_rank  # noqa: E402
from pipeline.eval.stats import mcnemar, wilson  # noqa: E402
from stages.negatives import config as negatives_config  # noqa: E402


def model_hits(ds: str, model: str, params: dict, sets: dict, ev) -> np.ndarray:
    """Per-user top-K hit@1 of a trained domain model on the test top-K set of `sets`."""
    import torch

    from pipeline.models.weights import load_trained
    from pipeline.eval.evaluator import _scores
    from pipeline.models.trainer import domain_configs

    cfg, _ = domain_configs(params, model)
    m, _ = load_trained(ds, model, cfg, ev.train())
    m.eval()
    m.set_history(ev.history("test"))
    t = sets["test_topk"]
    cands = candidate_matrix(t)
    with torch.no_grad():
        return positive_rank(_scores(m, t["uid"].to_numpy(), cands), t["label_index"].to_numpy()) < 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--models", nargs="*", default=[], help="trained domain models to score on both set kinds")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    ds, params = args.dataset, load_params(args.params)
    base = negatives_config(params)
    splits = {s: pq.read_table(paths.split(ds) / f"{s}.parquet", columns=["uid", "iid"]) for s in SPLITS}
    titles = pq.read_table(paths.kcore(ds) / "items.parquet", columns=["title"])["title"].to_pylist()
    vectors = text_vectors(titles, base)
    log_pop = floors.log_popularity(np.asarray(splits["train"]["iid"]), len(titles))
    ev = None
    if args.models:
        from pipeline.eval.evaluator import EvalSets

        ev = EvalSets.load(ds, candidates=False)
    print(f"{ds}: {len(titles)} items, text backend {base.text_backend}, "
          f"text_fraction {base.text_fraction}, text_pool {base.text_pool}")
    print(f"{'anchor':<9}{'set':<15}{'scorer':<17}{'HR@1':>7}  {'95% interval':<16}{'chance':>7}")
    for anchor in ("history", "positive"):
        sets, _ = make_all(splits, titles, dataclasses.replace(base, text_anchor=anchor), vectors=vectors)
        check = floors.giveaway_check(sets, vectors, log_pop)
        for r in check["rows"]:
            flag = "  <- beats chance" if r["beats_chance"] else ""
            print(f"{anchor:<9}{r['set']:<15}{r['scorer']:<17}{r['HR@1']:>7.3f}  "
                  f"[{r['low']:.3f}, {r['high']:.3f}]  {r['chance']:>7.3f}{flag}")
        hits = {}
        for model in args.models:
            hits[model] = model_hits(ds, model, params, sets, ev)
            iv = wilson(int(hits[model].sum()), len(hits[model]))
            print(f"{anchor:<9}{'test_topk':<15}{model:<17}{iv.value:>7.3f}  [{iv.low:.3f}, {iv.high:.3f}]")
        if hits:  # paired on the same users: each model vs the user-agnostic scorer, and vs MostPop
            t = sets["test_topk"]
            cands = candidate_matrix(t)
            agnostic = positive_rank(floors.floor_scores("centrality_pop", cands, vectors, log_pop, 0),
                                     t["label_index"].to_numpy()) < 1
            refs = {"centrality_pop": agnostic, **({"mostpop": hits["mostpop"]} if "mostpop" in hits else {})}
            for model, h in hits.items():
                for ref, r in refs.items():
                    if model != ref:
                        pt = mcnemar(h.astype(float), r.astype(float))
                        print(f"{anchor:<9}paired test_topk HR@1 {model} - {ref}: {pt.diff:+.3f} "
                              f"[{pt.low:+.3f}, {pt.high:+.3f}], McNemar p {pt.p_value:.2g}, n {pt.n}")


if __name__ == "__main__":
    main()
