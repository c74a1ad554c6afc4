"""The sharing module M and the LLM's view of its user/item token rows."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import PipelineError

# ----------------------------------------------------------------------------- M


class Sharing(nn.Module):
    """The information-sharing module M: user [U, h] and item [I, h] tables (buffers), the
    targets of L_ml (docs/design.md eq. 5), written by each side after its step (eq. 7).

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
    """The LLM's `<uid_k>`/`<iid_k>` rows of its input embedding (contiguous ids, vocab.json).

    Rows are read by calling the embedding module, not by indexing its weight: under
    DeepSpeed ZeRO-3 the weight is a partitioned placeholder that only the module's forward
    hooks gather (and route the gradient of the mutual-learning loss back through)."""

    def __init__(self, model, first_user: int, first_item: int, n_users: int, n_items: int):
        self.embed = model.get_input_embeddings()
        self.first = {"user": first_user, "item": first_item}
        self.n = {"user": n_users, "item": n_items}
        rows, self.hidden = embedding_shape(self.embed)
        for name in ("user", "item"):
            if self.first[name] is None or self.first[name] + self.n[name] > rows:
                raise PipelineError(f"LLM has {rows} embedding rows, too few for {n_users} user and {n_items} "
                                    "item tokens: joint training needs the vocab 'pe' (or 'rand') model")

    def rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        return self.embed((self.first[name] + ids).to(self.embed.weight.device))

    def table(self, name: str) -> torch.Tensor:
        with torch.no_grad():
            return self.rows(name, torch.arange(self.n[name])).detach()


def embedding_shape(embed: nn.Module) -> tuple[int, int]:
    """[rows, hidden] of an embedding, also when ZeRO-3 has partitioned its weight away."""
    rows, hidden = getattr(embed.weight, "ds_shape", embed.weight.shape)
    return int(rows), int(hidden)
