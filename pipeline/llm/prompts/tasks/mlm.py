"""MLM over item text (Cao et al., auxiliary, train only): an item's title and description, cut
to prompts.mlm_max_words, with a seeded prompts.mlm_mask_prob share of its words shown as
[MASK]; the answer is the masked words. Built from the item texts, not from users."""
from __future__ import annotations

import numpy as np

from pipeline.llm.prompts.config import PromptsConfig
from pipeline.llm.prompts.schema import MASK, Spec
from pipeline.llm.prompts.tasks.base import Task


class MLM(Task):
    name = "mlm"

    def item_specs(self, titles: list[str], descs: list[str], cfg: PromptsConfig) -> list[Spec]:
        rng = np.random.default_rng([cfg.seed, 5])
        words = [(t + (". " + d if d else "")).split()[:cfg.mlm_max_words] for t, d in zip(titles, descs)]
        ok = np.array([i for i, w in enumerate(words) if len(w) >= 2], dtype=np.int64)
        if cfg.mlm_max_items is not None and len(ok) > cfg.mlm_max_items:
            ok = np.sort(rng.choice(ok, cfg.mlm_max_items, replace=False))
        out = []
        for i in ok.tolist():
            w = words[i]
            k = min(max(1, int(round(cfg.mlm_mask_prob * len(w)))), len(w) - 1)
            masked = set(rng.choice(len(w), k, replace=False).tolist())
            text = " ".join(MASK if p in masked else x for p, x in enumerate(w))
            answer = " ".join(x for p, x in enumerate(w) if p in masked)
            out.append(Spec("mlm", -1, i, text=text, answer=answer))
        return out

    def render(self, r, sp: Spec) -> tuple[str, str, bool, str]:
        return (f"Some words of the text of {r.item(sp.iid)} are replaced by {MASK}: "
                f"{sp.text} Which words are masked? Answer:", sp.answer, False, "")
