"""Rendering: a `Spec` becomes (prompt, answer) in one of the two renders, `tokens`
(`<uid_k>`/`<iid_k>`) or `text` ("user k"/"item k"), in the dataset's wording (`Domain`).
`Renderer` holds what every task's prompt shares (the user and history head, item labels, the
pair prompt, the closing words); each task's own question lives on its class in `tasks/`.
`render_table` turns a split's specs into a prompt table (schema.SCHEMA) and its statistics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.llm.prompts.config import PromptsConfig
from pipeline.llm.prompts.schema import FAMILY, MASK, SCHEMA, Spec
from pipeline.llm.prompts.tasks import TASK_BY_NAME
from pipeline.llm.tokens import item_text, user_text


@dataclass(frozen=True)
class Domain:
    noun: str   # "movie"
    nouns: str  # "movies"
    did: str    # "watched"
    do: str     # "watch"


def domain_for(dataset: str) -> Domain:
    """The wording of a dataset: movies for MovieLens, products for Amazon, items otherwise."""
    if dataset.startswith("ml-"):
        return Domain("movie", "movies", "watched", "watch")
    if dataset.startswith("amazon-"):
        return Domain("product", "products", "purchased", "purchase")
    return Domain("item", "items", "interacted with", "interact with")


class Renderer:
    def __init__(self, titles: list[str], domain: Domain, cfg: PromptsConfig, tokens: bool):
        self.tokens, self.domain, self.cfg = tokens, domain, cfg
        self.short = [" ".join(t.split()[:cfg.title_max_words]) if cfg.title_max_words else " ".join(t.split())
                      for t in titles]

    def item(self, k: int) -> str:
        return item_text(k, self.tokens)

    def labelled(self, k: int) -> str:
        t = self.short[k]
        return f"{self.item(k)} ({t})" if t else self.item(k)

    def candidate(self, k: int) -> str:
        return self.labelled(k) if self.cfg.candidate_titles else self.item(k)

    def user(self, u: int) -> str:
        """The user as a sentence subject: 'User <uid_3>' or 'User 3'."""
        t = user_text(u, self.tokens)
        return f"User {t}" if self.tokens else t[:1].upper() + t[1:]

    def history(self, sp: Spec) -> tuple[str, bool]:
        """Rendered history, oldest dropped first to fit max_history_chars; (text, truncated)."""
        parts = [MASK if p == sp.mask_pos else self.labelled(k) for p, k in enumerate(sp.history)]
        keep = list(range(len(parts)))
        budget = self.cfg.max_history_chars
        truncated = False
        while budget is not None and len(keep) > 1 and len(", ".join(parts[p] for p in keep)) > budget:
            drop = next(p for p in keep if p != sp.mask_pos)  # the masked slot stays
            keep.remove(drop)
            truncated = True
        return ", ".join(parts[p] for p in keep), truncated

    def head(self, sp: Spec) -> tuple[str, bool]:
        """The sentence every user task opens with, the user and their history; (text, history truncated)."""
        d = self.domain
        hist, truncated = self.history(sp)
        head = f"{self.user(sp.uid)} has {d.did} the following {d.nouns} {hist}." if hist else \
            f"{self.user(sp.uid)} has not {d.did} any {d.nouns} yet."
        return head, truncated

    def pair_prefix(self, head: str) -> str:
        """The interaction question of a row's user and history up to the item: the prompt of
        the pair (u, k) is `pair_prefix + pair_suffix(k)`, for any item k. BDLM's DRS reads the
        LLM feature h of each (user, candidate) pair from it (docs/design.md eq. 4)."""
        return f"{head} Predict if he/she will {self.domain.do}"

    def pair_suffix(self, k: int) -> str:
        return f" {self.labelled(k)} next. Answer:"

    def tail(self, sp: Spec) -> str:
        """The words right before the answer (prompts.user_token_at_answer: user_at_answer)."""
        return user_at_answer(self.user(sp.uid)) if self.cfg.user_token_at_answer else "Answer:"

    def render(self, sp: Spec) -> tuple[str, str, bool, str]:
        """(prompt, answer, history truncated, pair prefix: '' for rows without a user history)."""
        task = TASK_BY_NAME.get(sp.task)
        if task is None:  # pragma: no cover - specs only hold known tasks
            raise PipelineError(f"unknown task {sp.task!r}")
        return task.render(self, sp)


def user_at_answer(user: str) -> str:
    """The prompt's closing words under prompts.user_token_at_answer: the user ("User <uid_3>",
    "User 3") named again right before the answer position, whose hidden state the answer is
    read from ("... Answer for user <uid_3>:"), so that state can attend to the user's token at
    a distance of one; the default ends with "Answer:" and names the user only at the start.
    Interaction rows keep "Answer:": their prompt is the pair prompt, prefix + the item's
    suffix, which BDLM's DRS reads for any item and so cannot name the user after the item."""
    return f"Answer for {user[:1].lower() + user[1:]}:"


def render_table(specs: list[Spec], renderer: Renderer) -> tuple[pa.Table, dict]:
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    truncated = 0
    for sp in specs:
        prompt, answer, cut, prefix = renderer.render(sp)
        truncated += cut
        cols["pair_prefix"].append(prefix)
        cols["task"].append(sp.task)
        cols["family"].append(FAMILY[sp.task])
        cols["prompt"].append(prompt)
        cols["answer"].append(answer)
        cols["uid"].append(sp.uid)
        cols["iid"].append(sp.iid)
        cols["candidates"].append(sp.candidates)
        cols["label_index"].append(sp.label_index)
        cols["label"].append(sp.label)
        cols["rating"].append(sp.rating)
    table = pa.table(cols, schema=SCHEMA)
    lengths = [len(p) for p in cols["prompt"]]
    by_task: dict[str, list[int]] = {}
    for t, n in zip(cols["task"], lengths):
        by_task.setdefault(t, []).append(n)
    stats = {"rows": table.num_rows, "histories_truncated": truncated,
             "mean_prompt_chars": float(np.mean(lengths)) if lengths else 0.0,
             "max_prompt_chars": int(max(lengths)) if lengths else 0,
             "counts": {t: len(v) for t, v in by_task.items()},
             "mean_prompt_chars_by_task": {t: float(np.mean(v)) for t, v in by_task.items()}}
    return table, stats
