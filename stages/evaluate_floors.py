"""evaluate_floors: the user-agnostic floors (pipeline.eval.floors) scored like every model, and the
give-away check of the candidate sets.

Writes, per floor, data/metrics/floors/<ds>/<floor>.json (all test users, and `llm_users`) and
data/outcomes/floors/<ds>/<floor>.parquet; and data/metrics/giveaway/<ds>.json: HR@1 of each
text-only scorer on every valid/test candidate set with its interval and chance, flagged where
a scorer that never sees the user beats chance (the report prints that flag in bold)."""
from __future__ import annotations

import logging
import json

import numpy as np
import pyarrow.parquet as pq

from pipeline.eval import floors, metrics

from pipeline import paths
from pipeline.artifacts import write_json
from pipeline.cli import dataset_parser, run
from pipeline.eval.evaluator import EvalSets, llm_users, stats_config, write_scores
from pipeline.data.negatives import text_vectors
from pipeline.config.params import load_params
from stages.negatives import config as negatives_config

log = logging.getLogger(__name__)


def floor_outcomes(name: str, ev: EvalSets, vectors, log_pop: np.ndarray, seed: int,
                   cent: dict[str, np.ndarray]):
    """Per-user outcomes of one floor on the candidate protocols (and, for `random`, on the
    binary sets and full retrieval: the other floors need a candidate set to be central in).
    `cent`: each test candidate set's centrality, computed once for all floors."""
    out = metrics.Outcomes()
    for p_index, protocol in enumerate(("topk", "ranking")):
        t = ev.candidates[f"test_{protocol}"]
        scores = floors.floor_scores(name, metrics.candidate_matrix(t), vectors, log_pop, seed + p_index,
                                     cent.get(f"test_{protocol}"))
        out.candidates(protocol, t["uid"].to_numpy(), scores, t["label_index"].to_numpy())
    if name == "random":
        rng = np.random.default_rng([seed, 9])
        for split in ("valid", "test"):
            t = ev.candidates[f"{split}_binary"]
            out.binary(split, t["uid"].to_numpy(), t["label"].to_numpy(), rng.random(t.num_rows))
        t = ev.splits["test"]
        masked, unmasked = metrics.retrieval_ranks(lambda u: rng.random((len(u), ev.n_items)),
                                                   t["uid"].to_numpy(), t["iid"].to_numpy(), ev.known("test"))
        out.ranks("retrieval", t["uid"].to_numpy(), masked)
        out.ranks("retrieval_unmasked", t["uid"].to_numpy(), unmasked)
    return out.table()


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    params = load_params(args.params)
    cfg, neg_cfg = stats_config(params), negatives_config(params)
    ds = args.dataset
    ev = EvalSets.load(ds)
    titles = pq.read_table(paths.kcore(ds) / "items.parquet", columns=["title"])["title"].to_pylist()
    vectors = text_vectors(titles, neg_cfg)
    log_pop = floors.log_popularity(ev.splits["train"]["iid"].to_numpy(), ev.n_items)
    users = llm_users(params, ev)
    no_text = not floors.has_text(vectors)
    # centrality of every valid/test candidate set, once: two floors and the check read it
    cent = {} if no_text else {name: floors.centrality(vectors, metrics.candidate_matrix(t))
                               for name, t in ev.candidates.items() if "candidates" in t.column_names}
    items = (paths.kcore(ds) / "items.parquet").as_posix()
    reason = f"no item of {ds} has a title to compare ({items}): centrality not computed"
    for name in floors.FLOORS:
        header = {"dataset": ds, "floor": name}
        if no_text and name != "random":  # skip only the floors that need titles, and say so
            table = metrics.Outcomes().table()
            header["not_computed"] = {"topk": reason, "ranking": reason}
        else:
            table = floor_outcomes(name, ev, vectors, log_pop, cfg.seed, cent)
        write_scores(table, cfg, header, paths.metrics_floors(ds, name), paths.outcomes("floors", ds, name),
                     {"llm_users": users})
    check = ({"rows": [], "gives_away": False, "flagged": [], "not_computed": reason} if no_text
             else floors.giveaway_check(ev.candidates, vectors, log_pop, cfg.confidence, cent))
    if no_text:
        log.info(f"[floors] {reason}")
    write_json({"dataset": ds, "text_anchor": neg_cfg.text_anchor, "text_backend": neg_cfg.text_backend, **check},
               paths.metrics("giveaway", ds))
    for r in check["rows"]:
        log.info(f"[floors] {ds} {r['set']:<14} {r['scorer']:<15} HR@1 {r['HR@1']:.3f} "
              f"[{r['low']:.3f}, {r['high']:.3f}] chance {r['chance']:.3f}")
    if check["gives_away"]:
        log.info("[floors] WARNING: the candidate sets give the positive away: " + "; ".join(check["flagged"]))
    log.info(json.dumps({"gives_away": check["gives_away"]}))


if __name__ == "__main__":
    run(main)
