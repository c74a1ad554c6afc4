"""Retrieval and ranking (Cao et al.): predict the user's next item. Both ask the same question;
ranking rows (evaluation only) carry the `<split>_ranking` set's 1+99 candidates in the
`candidates` column, never in the prompt, which is why train has no ranking rows."""
from __future__ import annotations

from pipeline.llm.prompts.schema import Spec
from pipeline.llm.prompts.tasks.base import EvalTargets, Task, TrainTargets


class Retrieval(Task):
    name = "retrieval"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        return [Spec("retrieval", u, it, t.history(r)) for r, (u, it) in enumerate(zip(t.uids, t.positives))]

    def eval_specs(self, e: EvalTargets) -> list[Spec]:
        return [Spec("retrieval", u, e.target(u, "retrieval"), e.history(u)) for u in sorted(e.target_items)]

    def question(self, r, sp: Spec) -> tuple[str, str]:
        d = r.domain
        return f"Predict the next {d.noun} he/she will {d.do}.", r.item(sp.iid)


class Ranking(Retrieval):
    name = "ranking"

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        return []

    def eval_specs(self, e: EvalTargets) -> list[Spec]:
        return e.candidate_set_specs("ranking")
