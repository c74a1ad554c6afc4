"""Which users the training prompts cover (prompts.train_users): `all` draws `max_train_users`
of every user; `eval_first` takes the users evaluate_llm scores (evaluate_llm.max_users / seed)
first and fills the rest of `max_train_users` with a seeded draw of the others, so a small
training budget is spent on the users the LLM rows are measured on."""
from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError
from pipeline.llm.prompts.config import PromptsConfig


def select_train_users(cfg: PromptsConfig, eligible: np.ndarray, eval_users: np.ndarray | None,
                       stats: dict) -> np.ndarray:
    """The users whose training samples are written, sorted; the rule (and a note when the cap
    is below the evaluated users) goes into `stats`."""
    rng = np.random.default_rng([cfg.seed, 0])
    cap = cfg.max_train_users
    stats["train_users_rule"] = cfg.train_users
    if cfg.train_users == "all":
        if cap is not None and len(eligible) > cap:
            eligible = np.sort(rng.choice(eligible, cap, replace=False))
        return eligible
    if eval_users is None:
        raise PipelineError("params.yaml: prompts.train_users is eval_first, but the evaluated users "
                            "(evaluate_llm.max_users / seed) were not given")
    first = np.intersect1d(eligible, np.asarray(eval_users, dtype=np.int64))
    rest = np.setdiff1d(eligible, first)
    if cap is None:
        return eligible
    if len(first) == cap:
        return first
    if len(first) > cap:  # more evaluated users than the cap: a seeded subset of them
        stats["train_users_note"] = (f"prompts.max_train_users {cap} < {len(first)} evaluated users: "
                                     f"only {cap} of them get training prompts")
        return np.sort(rng.choice(first, cap, replace=False))
    fill = rng.choice(rest, min(cap - len(first), len(rest)), replace=False)
    return np.sort(np.concatenate([first, fill]))
