"""MIM, masked item modelling (Cao et al., auxiliary, train only): the user's history up to and
including the target, one seeded position shown as [MASK]; the answer is the masked item."""
from __future__ import annotations

import numpy as np

from pipeline.llm.prompts.schema import MASK, Spec
from pipeline.llm.prompts.tasks.base import Task, TrainTargets, recent


class MIM(Task):
    name = "mim"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        rng = np.random.default_rng([t.cfg.seed, 4])
        out = []
        for u, j in zip(t.uids, t.positions):
            window = recent(t.train_items[u][:j + 1], t.cfg.history_len)
            m = int(rng.integers(len(window)))
            out.append(Spec("mim", u, window[m], window, mask_pos=m))
        return out

    def question(self, r, sp: Spec) -> tuple[str, str]:
        return f"Predict the {r.domain.noun} replaced by {MASK}.", r.item(sp.iid)
