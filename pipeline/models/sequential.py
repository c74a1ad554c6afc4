"""Sequential recommenders in plain torch: SASRec, GRU4Rec and BERT4Rec.

Conventions shared by all three (read this first):
- batches carry item *ids* (0..n_items-1) with -1 for padding, left-padded so the most
  recent item is always in the last column; BERT4Rec's [MASK] is id n_items;
- the embedding table is indexed by *token* = id + 1, so padding (-1) lands on row 0
  (`padding_idx`, a zero vector) and item i on row i + 1;
- scores are the dot product of an encoder state with the real item rows of that same
  table (shared input/output embeddings), so pad and [MASK] are never scored;
- `set_history` stores the [n_users, max_len] ids that `score_all` and `tables` encode;
- padding-free: a batch is padded only to its longest sequence (at most max_len), in training
  and at scoring. Nothing a real position computes depends on the width: pads are masked
  keys (transformers), never enter the GRU (packed), learned positions count from the right,
  and the loss reads real positions only. `bucket` groups users of similar length so that
  batches are narrow (see `epoch_batches`); `full_width = True` restores the fixed max_len
  width, for benchmarks/sequential_padding.py and the tests that compare the two.
- loss (cfg["loss"]): "ce" is the full softmax over every item at every real position;
  "sampled" is a sampled softmax against cfg["n_sampled"] negatives shared by the whole batch,
  drawn with weight (train count + 1) ** cfg["sampled_alpha"] (0: uniform) and logQ-corrected
  (`sampled_softmax`); SASRec also has "bce". Scoring always ranks every item.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.errors import PipelineError
from pipeline.models.base import TrainableModel
from pipeline.models.data import Interactions


def sampled_softmax(states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                    sampled: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target against the batch's shared sampled negatives, logQ-corrected
    (Yi et al. 2019; TensorFlow's sampled_softmax_loss): every logit, the positive's included,
    has log Q(item) subtracted, Q(item) being the expected number of times the item is drawn
    among the sampled, so that the loss's gradient is an unbiased-in-the-limit estimate of the
    full softmax's. A sampled item equal to a row's target (an accidental hit) is dropped from
    that row. states [N, d], table [n_items, d], targets [N], sampled [S], log_q [n_items]."""
    pos = (states * table[targets]).sum(-1) - log_q[targets]
    neg = states @ table[sampled].T - log_q[sampled]
    neg = neg.masked_fill(sampled[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], neg], 1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


def left_pad(seqs: list[np.ndarray], length: int, fill: int = -1) -> np.ndarray:
    """[len(seqs), length] with each sequence's last `length` items right-aligned."""
    out = np.full((len(seqs), length), fill, dtype=np.int64)
    for row, seq in enumerate(seqs):
        seq = seq[max(len(seq) - length, 0):]
        if len(seq):
            out[row, -len(seq):] = seq
    return out


class SequentialModel(TrainableModel):
    """What the three models share: config, the item table, history, scoring, and the
    next-item batches that SASRec and GRU4Rec train on (BERT4Rec overrides `batches`)."""

    n_special: ClassVar[int] = 1  # extra embedding rows beyond the items: the pad row
    min_train_len: ClassVar[int] = 2  # next-item training needs an input and a target
    losses: ClassVar[tuple[str, ...]] = ("ce", "sampled")

    def __init__(self, n_users: int, n_items: int, cfg: dict[str, Any]):
        super().__init__(n_users, n_items, cfg)
        self.dim = int(self.cfg.get("dim", 64))
        self.max_len = self.positive("max_len", 50)
        self.n_layers = int(self.cfg.get("n_layers", 2))
        self.batch_size = self.positive("batch_size", 256)
        self.bucket = self.positive("bucket", 16)
        self.full_width = False  # True: pad every batch to max_len (+ 1), as before padding-free
        self.loss_type = self.cfg.get("loss", "ce")
        if self.loss_type not in self.losses:
            raise PipelineError(f"params.yaml: domain.{self.name}.loss = {self.loss_type!r} must be one of "
                                f"{list(self.losses)}")
        if self.loss_type == "sampled":
            self.n_sampled = self.positive("n_sampled", 100)
            if self.n_sampled >= n_items:
                raise PipelineError(f"params.yaml: domain.{self.name}.n_sampled = {self.n_sampled} must be < the "
                                    f"number of items ({n_items}); use loss: ce for the full softmax")
            self.sampled_alpha = self.cfg.get("sampled_alpha", 0.0)
            if isinstance(self.sampled_alpha, bool) or not isinstance(self.sampled_alpha, (int, float)) \
                    or not 0 <= self.sampled_alpha <= 10:
                raise PipelineError(f"params.yaml: domain.{self.name}.sampled_alpha = {self.sampled_alpha!r} "
                                    "must be a number in [0, 10]")
        self.item_emb = nn.Embedding(n_items + self.n_special, self.dim, padding_idx=0)
        # small init: scores are raw dot products, and N(0, 1) rows start them far from 0
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.dropout = nn.Dropout(float(self.cfg.get("dropout", 0.2)))
        # not persistent: history is an input (train for valid, train + valid for test),
        # not a learned weight, so it stays out of checkpoints but follows .to(device)
        self.register_buffer("history", None, persistent=False)

    def positive(self, key: str, default: int) -> int:
        value = self.cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PipelineError(f"params.yaml: 'domain.{self.name}.{key}' must be an integer >= 1, got {value!r}")
        return value

    def log_q(self, data: Interactions) -> torch.Tensor:
        """[n_items] log of each item's expected count among n_sampled draws with replacement,
        weight (train count + 1) ** sampled_alpha."""
        w = (data.item_counts().astype(np.float64) + 1.0) ** float(self.sampled_alpha)
        return torch.from_numpy(np.log(self.n_sampled * w / w.sum()).astype(np.float32))

    def draw_sampled(self, log_q: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """n_sampled items (with replacement) from the distribution log_q describes."""
        cdf = np.cumsum(np.exp(log_q.numpy().astype(np.float64)))
        cdf /= cdf[-1]
        return torch.from_numpy(np.minimum(np.searchsorted(cdf, rng.random(self.n_sampled), side="right"),
                                           self.n_items - 1).astype(np.int64))

    # -- the one thing each model defines -------------------------------------------------
    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids (-1 = pad) -> [B, L, dim] states; state t has seen ids[:, :t+1]
        (SASRec, GRU4Rec) or the whole row (BERT4Rec)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.item_emb(ids + 1)

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight[1:self.n_items + 1]

    def set_history(self, history: torch.Tensor) -> None:
        history = torch.as_tensor(history, dtype=torch.long, device=self.item_emb.weight.device)
        if history.dim() != 2 or history.shape[0] != self.n_users:
            raise ValueError(f"history must be [n_users={self.n_users}, L], got {tuple(history.shape)}")
        if history.shape[1] >= self.max_len:  # keep the most recent max_len items
            history = history[:, history.shape[1] - self.max_len:]
        else:  # or pad on the left up to max_len, the length the model trained on
            history = F.pad(history, (self.max_len - history.shape[1], 0), value=-1)
        self.history = history.contiguous()

    def history_ids(self, users: torch.Tensor) -> torch.Tensor:
        if self.history is None:
            raise RuntimeError(f"{type(self).__name__}: call set_history(...) before scoring")
        return self.history[users]

    def user_state(self, users) -> torch.Tensor:
        """[B, dim] encoder state at the last position of each user's history."""
        users = torch.as_tensor(users, dtype=torch.long, device=self.item_emb.weight.device)
        ids = self.history_ids(users)
        if self.full_width or len(users) == 0:
            return self.encode(ids)[:, -1]
        # padding-free: encode batch_size users at a time in order of history length, each
        # group cut to its longest history (a state does not depend on its batch-mates)
        lengths = (ids >= 0).sum(1)
        order = torch.argsort(lengths, stable=True)
        states = []
        for s in range(0, len(order), self.batch_size):
            rows = order[s:s + self.batch_size]
            width = max(int(lengths[rows].max()), 1)
            states.append(self.encode(ids[rows, ids.shape[1] - width:])[:, -1])
        return torch.cat(states)[torch.argsort(order)]

    def score_all(self, users) -> torch.Tensor:
        return self.user_state(users) @ self.item_table().T

    @torch.no_grad()
    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        users = torch.arange(self.n_users, device=self.item_emb.weight.device)
        user = torch.cat([self.user_state(users[s:s + self.batch_size])
                          for s in range(0, self.n_users, self.batch_size)])
        return user.float().cpu(), self.item_table().detach().float().cpu().clone()

    def epoch_users(self, data: Interactions, rng: np.random.Generator) -> np.ndarray:
        """Users with enough train items to learn from, in a fresh random order."""
        lengths = np.diff(data.offsets)
        return rng.permutation(np.flatnonzero(lengths >= self.min_train_len))

    def epoch_batches(self, data: Interactions, rng: np.random.Generator, span: int) -> list[np.ndarray]:
        """The epoch's users cut into batches, all drawn from `rng`. bucket = 1: batches of
        the shuffled users in turn. bucket = b > 1: each run of b * batch_size shuffled users
        is sorted by length (capped at `span`, the most a row holds) and cut into batches,
        then the batches are shuffled. Amazon-shaped data has a long tail of long sequences,
        so a random batch nearly always holds one and pads everyone to max_len; a sorted run
        does not. Which users share a run, and the batch order, stay random."""
        users, size = self.epoch_users(data, rng), self.batch_size
        if self.bucket > 1:
            lengths = np.minimum(np.diff(data.offsets)[users], span)
            run = self.bucket * size
            users = np.concatenate([users[s:s + run][np.argsort(lengths[s:s + run], kind="stable")]
                                    for s in range(0, len(users), run)] or [users])
        batches = [users[s:s + size] for s in range(0, len(users), size)]
        if self.bucket > 1:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def width(self, seqs: list[np.ndarray], span: int) -> int:
        """Columns of a batch: its longest sequence, at most `span`."""
        return span if self.full_width else min(span, max(map(len, seqs)))

    def batches(self, data: Interactions, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """Next-item batches: inputs seq[:-1], targets seq[1:] over each user's most recent
        max_len + 1 train items, so every position predicts the item that followed it."""
        log_q = self.log_q(data) if self.loss_type == "sampled" else None
        for chunk in self.epoch_batches(data, rng, self.max_len + 1):
            seqs = [data.sequence(u) for u in chunk]
            seqs = left_pad(seqs, self.width(seqs, self.max_len + 1))
            inputs = seqs[:, :-1]
            # -1 marks a position to ignore: padding, and the user's first item, which
            # would otherwise be "predicted" from a pad input, i.e. from nothing
            targets = np.where(inputs >= 0, seqs[:, 1:], -1)
            yield self.extra({"users": torch.from_numpy(chunk), "inputs": torch.from_numpy(inputs.copy()),
                              "targets": torch.from_numpy(targets)}, data, rng, log_q)

    def extra(self, batch: dict[str, torch.Tensor], data: Interactions, rng: np.random.Generator,
              log_q: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-batch randomness, drawn from `rng` after the batch itself: the sampled softmax's
        shared negatives (and their log_q table), SASRec's BCE negatives."""
        if self.loss_type == "sampled":
            batch["sampled"], batch["log_q"] = self.draw_sampled(log_q, rng), log_q
        return batch

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Softmax cross-entropy at every non-pad position: over all items ("ce"), or over the
        target and the batch's sampled negatives ("sampled")."""
        targets = batch["targets"]
        valid = targets >= 0
        # logits for real positions only: [n_real, n_items] rather than [B, L, n_items]
        states = self.encode(batch["inputs"])[valid]
        if self.loss_type == "sampled":
            return sampled_softmax(states, self.item_table(), targets[valid], batch["sampled"], batch["log_q"])
        return F.cross_entropy(states @ self.item_table().T, targets[valid])


class TransformerBackbone(SequentialModel):
    """Item + learned position embeddings, pre-norm transformer blocks, final LayerNorm."""

    causal: ClassVar[bool]

    def __init__(self, n_users: int, n_items: int, cfg: dict[str, Any]):
        super().__init__(n_users, n_items, cfg)
        self.n_heads = int(self.cfg.get("n_heads", 2))
        self.pos_emb = nn.Embedding(self.max_len, self.dim)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(self.dim, self.n_heads, 4 * self.dim, float(self.cfg.get("dropout", 0.2)),
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(self.n_layers))
        self.norm = nn.LayerNorm(self.dim)

    def attn_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """[B * heads, L, L] True = may not attend: padding keys (the key-padding mask)
        and, for SASRec, future keys (the causal mask). A position may always attend to
        itself: otherwise a pad row has nothing to attend to, its softmax is NaN, and
        torch's eval fast path spreads that NaN over the whole sequence."""
        L = ids.shape[1]
        blocked = (ids < 0)[:, None, :].expand(-1, L, -1)
        if self.causal:
            blocked = blocked | torch.ones(L, L, dtype=torch.bool, device=ids.device).triu(1)
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=ids.device)
        return blocked.repeat_interleave(self.n_heads, dim=0)  # the layout nn.MultiheadAttention takes

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        # positions count from the right: with left padding the newest item always sits
        # at position max_len - 1, in training and at scoring alike
        x = self.dropout(self.embed(ids) + self.pos_emb.weight[self.max_len - L:])
        mask = self.attn_mask(ids)
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.norm(x)


class SASRec(TransformerBackbone):
    """Self-attentive sequential recommendation (Kang & McAuley, 2018), causal attention.
    cfg["loss"]: "ce" (full softmax, the RecBole setting), "sampled" (sampled softmax) or
    "bce" (the paper: one sampled negative per position)."""

    name = "sasrec"
    causal = True
    losses = ("ce", "sampled", "bce")

    def extra(self, batch, data, rng, log_q):
        if self.loss_type == "bce":
            batch["negatives"] = torch.from_numpy(self.sample_negatives(batch, data, rng))
        return super().extra(batch, data, rng, log_q)

    def sample_negatives(self, batch, data: Interactions, rng: np.random.Generator) -> np.ndarray:
        """One negative per target, uniform over the items the user has no train
        interaction with (the paper's sampler); -1 where the target is padding. A user
        who has seen every item keeps a draw that at least differs from the target."""
        targets, n = batch["targets"].numpy(), self.n_items

        def draw(t, shift):  # uniform over the n - 1 items other than t, for shift in [0, n - 1)
            return (t + 1 + shift) % n

        # the first draw is max_len wide whatever the batch's width, so that a narrower
        # batch gets the very negatives (and leaves rng where) the full-width one would
        shift = rng.integers(0, n - 1, size=(len(targets), self.max_len))
        negs = draw(np.maximum(targets, 0), shift[:, self.max_len - targets.shape[1]:])
        for row, u in enumerate(batch["users"].tolist()):
            seen, valid = data.sequence(u), targets[row] >= 0
            bad = valid & np.isin(negs[row], seen)
            for _ in range(3):  # rejection: cheap when a user has seen few of many items
                if not bad.any():
                    break
                negs[row, bad] = draw(targets[row, bad], rng.integers(0, n - 1, size=int(bad.sum())))
                bad = valid & np.isin(negs[row], seen)
            if bad.any():  # a heavy user: draw from the unseen items directly
                unseen = np.setdiff1d(np.arange(n), seen)
                if len(unseen):
                    negs[row, bad] = rng.choice(unseen, size=int(bad.sum()))
        return np.where(targets >= 0, negs, -1)

    def loss(self, batch):
        if self.loss_type != "bce":
            return super().loss(batch)
        targets = batch["targets"]
        valid = targets >= 0
        states = self.encode(batch["inputs"])[valid]
        pos = (states * self.embed(targets[valid])).sum(-1)
        neg = (states * self.embed(batch["negatives"][valid])).sum(-1)
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))


class GRU4Rec(SequentialModel):
    """Session-based recommendation with RNNs (Hidasi et al., 2016), trained with
    cross-entropy over all items at every position (the RecBole setting), or a sampled softmax. The GRU runs over
    each user's real items only (packed; RecBole gets the same by padding on the right)."""

    name = "gru4rec"

    def __init__(self, n_users: int, n_items: int, cfg: dict[str, Any]):
        super().__init__(n_users, n_items, cfg)
        # nn.GRU applies its dropout only between layers (and warns when there are none)
        self.gru = nn.GRU(self.dim, self.dim, self.n_layers, batch_first=True,
                          dropout=float(self.cfg.get("dropout", 0.2)) if self.n_layers > 1 else 0.0)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        # pads never enter the GRU (packed sequences): run through it, even a zero embedding
        # moves the state (the biases), and a user's state would depend on the batch's width.
        # Packing takes right padding: rotate each row's n real items to the front and back.
        L, n = ids.shape[1], (ids >= 0).sum(1)
        cols = torch.arange(L, device=ids.device)
        right = torch.gather(ids, 1, (cols + L - n[:, None]) % L)
        packed = pack_padded_sequence(self.dropout(self.embed(right)), n.clamp(min=1).cpu(),
                                      batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=L)
        out = torch.gather(out, 1, ((cols + n[:, None]) % L)[:, :, None].expand(-1, -1, out.shape[2]))
        return self.dropout(out)


class BERT4Rec(TransformerBackbone):
    """Bidirectional transformer trained by cloze (Sun et al., 2019): random items are
    replaced by [MASK] and predicted from both sides; at scoring, a [MASK] appended after
    the history is predicted from the left side alone."""

    name = "bert4rec"
    causal = False
    n_special = 2  # pad row and the [MASK] row
    min_train_len = 1  # a lone item can still be masked and predicted

    def __init__(self, n_users: int, n_items: int, cfg: dict[str, Any]):
        super().__init__(n_users, n_items, cfg)
        self.mask_prob = float(self.cfg.get("mask_prob", 0.2))
        self.mask_id = n_items  # token n_items + 1, the embedding's last row

    def batches(self, data, rng):
        log_q = self.log_q(data) if self.loss_type == "sampled" else None
        for chunk in self.epoch_batches(data, rng, self.max_len):
            seqs = [data.sequence(u) for u in chunk]
            ids = left_pad(seqs, self.width(seqs, self.max_len))
            real = ids >= 0
            # drawn max_len wide whatever the width: a narrower batch masks the same items
            draws = rng.random((len(chunk), self.max_len))[:, self.max_len - ids.shape[1]:]
            masked = (draws < self.mask_prob) & real
            # a row with nothing masked teaches nothing: mask its newest item, which is
            # also the position that scoring asks about
            masked[~masked.any(axis=1), -1] = True
            yield self.extra({"users": torch.from_numpy(chunk),
                              "inputs": torch.from_numpy(np.where(masked, self.mask_id, ids)),
                              "targets": torch.from_numpy(np.where(masked, ids, -1))}, data, rng, log_q)

    def history_ids(self, users):
        # drop the oldest item so the [MASK] to be predicted still fits in max_len
        hist = super().history_ids(users)
        return torch.cat([hist[:, 1:], torch.full_like(hist[:, :1], self.mask_id)], dim=1)

