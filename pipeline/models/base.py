"""The interface every domain model implements; the trainer and pipeline.eval.metrics rely on it."""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from pipeline.models.data import Interactions


class DomainModel(nn.Module, abc.ABC):
    """A recommender that scores items for users.

    - `score_all(users)` is [B, n_items], higher = more likely; `score(users, items)` is
      [B, C] for candidate sets (the default gathers from score_all);
    - `tables()` -> (user [n_users, d], item [n_items, d]) for embedding export;
    - sequential models condition on the history given by `set_history` ([n_users, L] item
      ids, -1 padded on the left): the train items for valid, train + valid for test.
    """

    name: ClassVar[str]

    def __init__(self, n_users: int, n_items: int, cfg: dict[str, Any]):
        super().__init__()
        self.n_users, self.n_items, self.cfg = n_users, n_items, dict(cfg)

    @abc.abstractmethod
    def score_all(self, users: torch.Tensor) -> torch.Tensor: ...

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.score_all(users), 1, items)

    @abc.abstractmethod
    def tables(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def set_history(self, history: torch.Tensor) -> None:
        """Non-sequential models score from their tables alone."""

    def attach(self, data: Interactions) -> None:
        """Rebuild what a checkpoint does not hold but scoring needs (a graph, counts) from
        the train split; called after loading weights. Most models need nothing."""


class TrainableModel(DomainModel):
    """A model fit by gradient steps in pipeline.models.trainer."""

    @abc.abstractmethod
    def batches(self, data: Interactions, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of training batches, drawn with `rng` (seeded by the trainer)."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


class StaticModel(DomainModel):
    """A model built in one pass from counts (MostPop, ItemKNN)."""

    @abc.abstractmethod
    def build(self, data: Interactions) -> None: ...

    def attach(self, data: Interactions) -> None:
        self.build(data)
