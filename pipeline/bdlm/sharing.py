"""The sharing module M and the LLM's view of its user/item token rows."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import PipelineError

# ----------------------------------------------------------------------------- M


class Sharing(nn.Module):
    """The information-sharing module M: user [U, h] and item [I, h] tables (buffers).

    `writes` journals every write as (step, side, table, n_rows): the order of Algorithm 1
    can be read back from it (tests do)."""

    def __init__(self, user: torch.Tensor, item: torch.Tensor):
        super().__init__()
        self.register_buffer("user", user.detach().clone().float())
        self.register_buffer("item", item.detach().clone().float())
        self.writes: list[tuple[int, str, str, int]] = []

    def table(self, name: str) -> torch.Tensor:
        return self.user if name == "user" else self.item

    @torch.no_grad()
    def write(self, step: int, side: str, name: str, ids: torch.Tensor, rows: torch.Tensor) -> None:
        self.table(name)[ids] = rows.detach().to(self.user.device, self.user.dtype)
        self.writes.append((step, side, name, int(len(ids))))


def shared_tables(share: str) -> tuple[str, ...]:
    return {"users": ("user",), "items": ("item",), "both": ("user", "item")}[share]


# ----------------------------------------------------------------------------- LLM side


class LLMRows:
    """The LLM's `<uid_k>`/`<iid_k>` rows of its input embedding (contiguous ids, vocab.json)."""

    def __init__(self, model, first_user: int, first_item: int, n_users: int, n_items: int):
        self.model, self.first = model, {"user": first_user, "item": first_item}
        self.n = {"user": n_users, "item": n_items}
        rows = model.get_input_embeddings().weight.shape[0]
        for name in ("user", "item"):
            if self.first[name] is None or self.first[name] + self.n[name] > rows:
                raise PipelineError(f"LLM has {rows} embedding rows, too few for {n_users} user and {n_items} "
                                    "item tokens: joint training needs the vocab 'pe' (or 'rand') model")

    def rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings().weight[self.first[name] + ids]

    def table(self, name: str) -> torch.Tensor:
        return self.rows(name, torch.arange(self.n[name])).detach()
