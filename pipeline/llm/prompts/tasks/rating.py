"""Rating (Cao et al.): the 1-5 rating the user gives the target item. Written only when the
dataset has explicit ratings in 1-5 (`rating_support`); the answer is the rounded rating."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.llm.prompts.schema import Spec
from pipeline.llm.prompts.tasks.base import EvalTargets, Task, TrainTargets


def rating_support(train: pa.Table) -> tuple[bool, str]:
    """Whether the dataset has explicit 1-5 ratings to predict, and why not if not."""
    if "rating" not in train.column_names:
        return False, "no rating column"
    r = train["rating"].to_numpy().astype(np.float64)
    if len(r) == 0:
        return False, "empty train split"
    if not np.isfinite(r).all():
        return False, "non-finite ratings"
    if np.unique(r).size < 2:
        return False, f"implicit feedback: every rating is {r[0]:g}"
    if r.min() < 1 or r.max() > 5:
        return False, f"ratings outside 1-5 (min {r.min():g}, max {r.max():g})"
    return True, "explicit ratings in 1-5"


def rating_digit(r: float) -> str:
    return str(int(np.clip(np.rint(r), 1, 5)))


class Rating(Task):
    name = "rating"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        if not t.has_rating:
            return []
        return [Spec("rating", u, it, t.history(r), rating=t.ratings[r])
                for r, (u, it) in enumerate(zip(t.uids, t.positives))]

    def eval_specs(self, e: EvalTargets) -> list[Spec]:
        if not e.has_rating:
            return []
        return [Spec("rating", u, e.target(u, "rating"), e.history(u), rating=float(e.target_ratings[u][0]))
                for u in sorted(e.target_items)]

    def question(self, r, sp: Spec) -> tuple[str, str]:
        user = r.user(sp.uid)
        return (f"How will {user[:1].lower() + user[1:]} rate {r.labelled(sp.iid)}? Answer with 1-5.",
                rating_digit(sp.rating))
