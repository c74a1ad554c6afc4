"""What every task class shares: the `Task` base (a task builds its train and evaluation specs
and renders one spec), and the targets the tasks are built around, `TrainTargets` (the last
training items of each training user) and `EvalTargets` (one split's held-out item per user,
with the history it is conditioned on)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.data.negatives import Forbidden, NegativesConfig
from pipeline.errors import PipelineError
from pipeline.llm.prompts.config import PromptsConfig
from pipeline.llm.prompts.schema import Spec

if TYPE_CHECKING:  # the renderer calls the tasks, the tasks only call its methods
    from pipeline.llm.prompts.render import Renderer


def recent(seq: np.ndarray, n: int) -> list[int]:
    """The last `n` items of a sequence, oldest first."""
    return [int(x) for x in seq[max(0, len(seq) - n):]]


@dataclass
class TrainTargets:
    """Row r: training user `uids[r]`'s item at position `positions[r]` of their training
    sequence, `positives[r]`, the target of that row in every train task. `forbidden`: items a
    user interacted with in any split, which no negative may be; `pop_cdf`: the popularity
    sampler at prompts.popularity_alpha; `stats` collects the build statistics."""
    cfg: PromptsConfig
    train_items: dict[int, np.ndarray]
    uids: list[int]
    positions: list[int]
    positives: list[int]
    ratings: list[float]
    forbidden: Forbidden
    n_items: int
    train_iids: np.ndarray
    pop_cdf: np.ndarray
    has_rating: bool
    sampler: NegativesConfig | None = None
    titles: list[str] = field(default_factory=list)
    vectors: object = None
    stats: dict = field(default_factory=dict)

    def history(self, r: int) -> list[int]:
        """Row r's history: the user's training items before the target, cut to history_len."""
        return recent(self.train_items[self.uids[r]][:self.positions[r]], self.cfg.history_len)

    def uid_array(self) -> np.ndarray:
        return np.asarray(self.uids, dtype=np.int64)

    def positive_array(self) -> np.ndarray:
        return np.asarray(self.positives, dtype=np.int64)


@dataclass
class EvalTargets:
    """One evaluation split: each user's held-out item (`target_items`, one per user) and rating,
    the items their prompt is conditioned on (`history`: train, + valid for test) and the
    evaluation sets (negatives stage) the candidate rows come from."""
    split: str
    sets: dict[str, pa.Table]
    target_items: dict[int, np.ndarray]
    target_ratings: dict[int, np.ndarray]
    history_items: dict[int, np.ndarray]
    cfg: PromptsConfig
    has_rating: bool

    def history(self, u: int) -> list[int]:
        if u not in self.history_items:
            raise PipelineError(f"negatives {self.split}_*.parquet: uid {u} has no {self.split} interaction "
                                f"(negatives are out of step with the split, re-run negatives)")
        return recent(self.history_items[u], self.cfg.history_len)

    def target(self, u: int, where: str) -> int:
        if u not in self.target_items:
            raise PipelineError(f"negatives {self.split}_{where}.parquet: uid {u} has no {self.split} interaction "
                                f"(negatives are out of step with the split, re-run negatives)")
        if len(self.target_items[u]) != 1:
            raise PipelineError(f"split {self.split}.parquet: uid {u} has {len(self.target_items[u])} rows, "
                                f"expected 1")
        return int(self.target_items[u][0])

    def candidate_set_specs(self, task: str) -> list[Spec]:
        """One spec per row of the `<split>_<task>` candidate set (topk, ranking), in file order."""
        out = []
        t = self.sets[f"{self.split}_{task}"].select(["uid", "pos_iid", "candidates", "label_index"]).to_pylist()
        for row in t:
            u = row["uid"]
            if row["pos_iid"] != self.target(u, task) or row["candidates"][row["label_index"]] != row["pos_iid"]:
                raise PipelineError(f"negatives {self.split}_{task}.parquet: positive of uid {u} is not its "
                                    f"{self.split} item (re-run negatives)")
            out.append(Spec(task, u, row["pos_iid"], self.history(u), candidates=row["candidates"],
                            label_index=int(row["label_index"]), show_candidates=task == "topk"))
        return out


class Task:
    """One prompt task. `train_specs` / `eval_specs` build its samples (none by default);
    `question` words what it asks of a user with a history, `render` the whole prompt."""
    name: str = ""

    def train_specs(self, t: TrainTargets) -> list[Spec]:
        return []

    def eval_specs(self, e: EvalTargets) -> list[Spec]:
        return []

    def question(self, r: Renderer, sp: Spec) -> tuple[str, str]:
        """(the question after the user and history sentence, the answer)."""
        raise NotImplementedError

    def render(self, r: Renderer, sp: Spec) -> tuple[str, str, bool, str]:
        """(prompt, answer, history truncated, pair prefix): the head, the question, the tail."""
        head, truncated = r.head(sp)
        q, answer = self.question(r, sp)
        return f"{head} {q} {r.tail(sp)}", answer, truncated, r.pair_prefix(head)
