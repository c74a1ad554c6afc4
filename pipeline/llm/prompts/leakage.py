"""The leakage check run on every build: a user's held-out (valid/test) items never appear in
their train rows, and the test item never in their valid rows, in any role."""
from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.llm.prompts.schema import Spec


def check_leakage(specs: dict[str, list[Spec]], heldout: dict[int, set[int]],
                  test_items: dict[int, set[int]]) -> None:
    """A user's valid/test items never anywhere in their train rows (not a target, a positive, a
    history item, a candidate nor a negative); the test item never anywhere in valid rows."""
    for split, banned in (("train", heldout), ("valid", test_items)):
        for sp in specs[split]:
            if sp.uid < 0:
                continue
            bad = banned.get(sp.uid)
            if not bad:
                continue
            shown = {sp.iid, *sp.history, *sp.candidates}
            if bad & shown:
                raise PipelineError(f"leakage: a {split} {sp.task} sample of uid {sp.uid} holds one of its "
                                    f"held-out items {sorted(bad & shown)}")
