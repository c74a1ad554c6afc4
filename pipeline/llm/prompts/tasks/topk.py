"""Top-K (BDLM, Table 2): which one of the listed candidates (the target among
prompts.train_topk_negatives unseen items in training, the `<split>_topk` set in evaluation)
the user takes next. Training candidate sets are drawn by prompts.train_topk_sampler: `eval`
with the evaluation sets' sampler (negatives.*: text-similar negatives around the user's history
before the target + popularity), `popularity` with popularity alone."""
from __future__ import annotations

import numpy as np

from pipeline.data.negatives import candidate_sets, draw_negatives, history_pool, popularity_weights
from pipeline.errors import PipelineError
from pipeline.llm.prompts.schema import Spec
from pipeline.llm.prompts.tasks.base import EvalTargets, Task, TrainTargets


class TopK(Task):
    name = "topk"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        rng = np.random.default_rng([t.cfg.seed, 1])
        uids, pos = t.uid_array(), t.positive_array()
        negs, n_text = train_negatives(t, rng, uids, pos)
        sets = candidate_sets(uids, pos, negs, n_text.astype(np.int16), rng)
        cands = sets["candidates"].to_pylist()
        label = sets["label_index"].to_pylist()
        return [Spec("topk", u, it, t.history(r), candidates=cands[r], label_index=label[r], show_candidates=True)
                for r, (u, it) in enumerate(zip(t.uids, t.positives))]

    def eval_specs(self, e: EvalTargets) -> list[Spec]:
        return e.candidate_set_specs("topk")

    def question(self, r, sp: Spec) -> tuple[str, str]:
        d = r.domain
        cands = ", ".join(r.candidate(k) for k in sp.candidates)
        return (f"Predict which 1 {d.noun} in candidate set will he/she {d.do} most probably? "
                f"Candidates: {cands}.", r.item(sp.iid))


def train_negatives(t: TrainTargets, rng: np.random.Generator, uids: np.ndarray,
                    pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[rows, train_topk_negatives] negatives and the text-drawn count per row. The text pool of
    row r is anchored on the user's training items before its target, as the evaluation sets
    anchor theirs on the items before the held-out one."""
    cfg, sampler, stats = t.cfg, t.sampler, t.stats
    m = cfg.train_topk_negatives
    stats["train_topk_sampler"] = cfg.train_topk_sampler
    if cfg.train_topk_sampler == "popularity":
        pop_cdf = popularity_weights(t.train_iids, t.n_items, cfg.popularity_alpha)
        return draw_negatives(rng, uids, m, t.forbidden, pop_cdf, None, 0)
    if sampler is None:
        raise PipelineError("params.yaml: prompts.train_topk_sampler is eval, but no negatives config was given")
    pop_cdf = popularity_weights(t.train_iids, t.n_items, sampler.popularity_alpha)
    n_text = int(round(sampler.text_fraction * m))
    pool = None
    if n_text > 0 and len(uids):
        # imported here: the text encoder is only needed by the `eval` sampler
        from pipeline.data.negatives import text_vectors
        from pipeline.data.textsim import topk_neighbors

        if sampler.text_anchor == "positive":
            anchors = pos[:, None].astype(np.int64)
        else:
            h = sampler.text_history
            anchors = np.full((len(uids), h), -1, dtype=np.int64)
            for r, (u, j) in enumerate(zip(t.uids, t.positions)):
                before = t.train_items[u][:j]
                tail = np.asarray(before[max(0, len(before) - h):], dtype=np.int64)
                if len(tail):
                    anchors[r, h - len(tail):] = tail
        vectors = t.vectors if t.vectors is not None else text_vectors(t.titles, sampler)
        uniq = np.unique(anchors[anchors >= 0])
        nb = (topk_neighbors(vectors, uniq, sampler.text_pool) if len(uniq)
              else np.zeros((0, sampler.text_pool), np.int64))
        pool = history_pool(anchors, lambda items: nb[np.searchsorted(uniq, items)], sampler.text_pool)
    negs, n_from_text = draw_negatives(rng, uids, m, t.forbidden, pop_cdf, pool, n_text)
    stats["train_topk_text_anchor"] = sampler.text_anchor
    stats["train_topk_mean_text_negatives"] = float(np.mean(n_from_text)) if len(uids) else 0.0
    return negs, n_from_text
