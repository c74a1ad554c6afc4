"""Interaction prediction (BDLM, Table 2): will the user take this item next, Yes or No. Its
prompt is the pair prompt, pair_prefix + the item's pair_suffix, which BDLM's DRS also reads for
any (user, candidate) pair. Training: the target and one popularity-drawn unseen item per
row; evaluation: the `<split>_binary` set."""
from __future__ import annotations

import numpy as np

from pipeline.data.negatives import draw_negatives
from pipeline.errors import PipelineError
from pipeline.llm.prompts.schema import Spec
from pipeline.llm.prompts.tasks.base import EvalTargets, Task, TrainTargets


class Interaction(Task):
    name = "interaction"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        rng = np.random.default_rng([t.cfg.seed, 2])
        negs, _ = draw_negatives(rng, t.uid_array(), 1, t.forbidden, t.pop_cdf, None, 0)
        out = []
        for r, (u, it) in enumerate(zip(t.uids, t.positives)):
            hist = t.history(r)
            out.append(Spec("interaction", u, it, hist, label=1))
            out.append(Spec("interaction", u, int(negs[r, 0]), hist, label=0))
        return out

    def eval_specs(self, e: EvalTargets) -> list[Spec]:
        out = []
        for row in e.sets[f"{e.split}_binary"].select(["uid", "iid", "label"]).to_pylist():
            u = row["uid"]
            if row["label"] == 1 and row["iid"] != e.target(u, "binary"):
                raise PipelineError(f"negatives {e.split}_binary.parquet: positive of uid {u} is not its "
                                    f"{e.split} item")
            out.append(Spec("interaction", u, row["iid"], e.history(u), label=int(row["label"])))
        return out

    def render(self, r, sp: Spec) -> tuple[str, str, bool, str]:
        head, truncated = r.head(sp)
        prefix = r.pair_prefix(head)
        return prefix + r.pair_suffix(sp.iid), "Yes" if sp.label == 1 else "No", truncated, prefix
