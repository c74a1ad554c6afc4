"""BPR (Cao et al., auxiliary, train only): which of two items, the target and one
popularity-drawn unseen item in seeded order, the user prefers to take next."""
from __future__ import annotations

import numpy as np

from pipeline.data.negatives import draw_negatives
from pipeline.llm.prompts.schema import Spec
from pipeline.llm.prompts.tasks.base import Task, TrainTargets


class BPR(Task):
    name = "bpr"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        rng = np.random.default_rng([t.cfg.seed, 3])
        negs, _ = draw_negatives(rng, t.uid_array(), 1, t.forbidden, t.pop_cdf, None, 0)
        pos_first = rng.random(len(t.uids)) < 0.5
        out = []
        for r, (u, it) in enumerate(zip(t.uids, t.positives)):
            pair = [it, int(negs[r, 0])] if pos_first[r] else [int(negs[r, 0]), it]
            out.append(Spec("bpr", u, it, t.history(r), candidates=pair, label_index=pair.index(it),
                            show_candidates=True))
        return out

    def question(self, r, sp: Spec) -> tuple[str, str]:
        d = r.domain
        a, b = (r.candidate(k) for k in sp.candidates)
        return f"Which {d.noun} will he/she prefer to {d.do} next: {a} or {b}?", r.item(sp.iid)
