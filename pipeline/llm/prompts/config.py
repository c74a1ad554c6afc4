"""`PromptsConfig`: the params.yaml `prompts` section as the builders read it, checked on
construction so a bad value is refused with the key that holds it."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import PipelineError

TRAIN_USERS = ("all", "eval_first")
TRAIN_TOPK_SAMPLERS = ("eval", "popularity")


@dataclass(frozen=True)
class PromptsConfig:
    seed: int = 0
    history_len: int = 5
    title_max_words: int | None = 6
    candidate_titles: bool = True
    max_train_users: int | None = None
    mlm_mask_prob: float = 0.3
    train_targets_per_user: int = 3
    train_topk_negatives: int = 19
    popularity_alpha: float = 0.75
    max_history_chars: int | None = 400
    mlm_max_words: int = 32
    mlm_max_items: int | None = None
    train_users: str = "all"
    train_topk_sampler: str = "popularity"
    user_token_at_answer: bool = False

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise PipelineError(f"params.yaml: prompts.{key} must be {what}, got {getattr(self, key)!r}")
        need(self.history_len >= 1, "history_len", ">= 1")
        need(self.title_max_words is None or self.title_max_words >= 1, "title_max_words", ">= 1 or null")
        need(self.max_train_users is None or self.max_train_users >= 1, "max_train_users", ">= 1 or null")
        need(0.0 < self.mlm_mask_prob <= 1.0, "mlm_mask_prob", "in (0, 1]")
        need(self.train_targets_per_user >= 1, "train_targets_per_user", ">= 1")
        need(self.train_topk_negatives >= 1, "train_topk_negatives", ">= 1")
        need(self.popularity_alpha >= 0, "popularity_alpha", ">= 0")
        need(self.max_history_chars is None or self.max_history_chars >= 1, "max_history_chars", ">= 1 or null")
        need(self.mlm_max_words >= 2, "mlm_max_words", ">= 2")
        need(self.mlm_max_items is None or self.mlm_max_items >= 0, "mlm_max_items", ">= 0 or null")
        need(self.train_users in TRAIN_USERS, "train_users", f"one of {', '.join(TRAIN_USERS)}")
        need(self.train_topk_sampler in TRAIN_TOPK_SAMPLERS, "train_topk_sampler",
             f"one of {', '.join(TRAIN_TOPK_SAMPLERS)}")
