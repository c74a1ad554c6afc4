"""Collaborative-filtering models on (user, item) pairs: MF, GMF, NeuMF (NCF), LightGCN, and
an MF rating regressor. All share the embedding tables that BDLM pre-loads into the LLM."""
from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.base import TrainableModel
from pipeline.models.data import Interactions
from pipeline.models.sampling import SeenPairs, epoch_order, uniform_negatives


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


class _Embeddings(TrainableModel):
    """User and item tables of size cfg['dim'], N(0, 0.1^2) init (as in NCF/LightGCN code)."""

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        d = int(cfg.get("dim", 64))
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items, d)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def tables(self):
        return self.user.weight.detach(), self.item.weight.detach()

    def live_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`tables()` with gradients (BDLM's mutual-learning loss reads them while training)."""
        return self.user.weight, self.item.weight


class _BPR(_Embeddings):
    """Pairwise BPR on (user, positive, sampled negative) with L2 on the batch's rows.
    cfg['init']: normal (N(0, 0.1^2), the default) or xavier (Xavier-uniform, as LightGCN's
    paper and RecBole): LightGCN's default, measured in docs/baselines.md."""

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        init = cfg.get("init", "normal")
        if init == "xavier":
            nn.init.xavier_uniform_(self.user.weight)
            nn.init.xavier_uniform_(self.item.weight)
        elif init != "normal":
            raise ValueError(f"{self.name}: init must be 'normal' or 'xavier', got {init!r}")

    def seen_pairs(self, data: Interactions) -> SeenPairs:
        """The train pairs' membership test, built once per train split rather than every epoch
        (a sort of every pair: ~10% of a LightGCN epoch on ML-100K)."""
        cached = getattr(self, "_seen", None)
        if cached is None or cached[0] is not data:
            self._seen = (data, SeenPairs(data))
        return self._seen[1]

    def batches(self, data: Interactions, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        neg = uniform_negatives(rng, data.uids, self.seen_pairs(data))
        for idx in epoch_order(rng, len(data.uids), int(self.cfg.get("batch_size", 2048))):
            yield {"user": _tensor(data.uids[idx]), "pos": _tensor(data.iids[idx]), "neg": _tensor(neg[idx])}

    def pair_scores(self, users, items) -> torch.Tensor:
        u, i = self.final_tables()
        return (u[users] * i[items]).sum(-1)

    def final_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user.weight, self.item.weight

    def live_tables(self):
        return self.final_tables()

    def pair_features(self, users, items) -> torch.Tensor:
        """f(u, i) = e_u * e_i (final tables): its sum is the model's score (BDLM's DRS input)."""
        u, i = self.final_tables()
        return u[users] * i[items]

    def loss(self, batch):
        u, i = self.final_tables()
        eu, ep, en = u[batch["user"]], i[batch["pos"]], i[batch["neg"]]
        bpr = -F.logsigmoid((eu * ep).sum(-1) - (eu * en).sum(-1)).mean()
        # regularise the layer-0 rows actually used, as LightGCN's reference code does
        reg = (self.user(batch["user"]).pow(2).sum() + self.item(batch["pos"]).pow(2).sum()
               + self.item(batch["neg"]).pow(2).sum()) / (2 * len(batch["user"]))
        return bpr + float(self.cfg.get("reg", 1e-4)) * reg

    def score_all(self, users):
        u, i = self.final_tables()
        return u[users] @ i.T


class MF(_BPR):
    name = "mf"


class _Propagate(torch.autograd.Function):
    """LightGCN's propagation as one autograd node: out = (x + A x + ... + A^K x) / (K + 1)
    for the symmetric normalised adjacency A (a CSR matrix).

    The gradient is (g + A g + ... + A^K g) / (K + 1) again (A is symmetric), computed in
    Horner form, h + A (h + A (... h)) with h = g / (K + 1): the very sums, in the very order,
    that autograd formed over the per-layer graph this replaces (K sparse matmuls, a stack and
    a mean, whose backward also reused A instead of building its transpose). So results are
    unchanged bit for bit, while a training step allocates, fills and frees K + 1 fewer
    full-size tables each way and autograd tracks one node instead of 2K + 2.

    The table is propagated in column blocks (`_column_blocks`): a sparse matmul reads a row
    of its dense operand for every non-zero, and a block small enough to stay in a core's
    cache makes those reads cheap. Each output element is the same sum either way (bitwise
    equal on AVX512; on AVX2 the kernel's vector width changes the summation order with the
    block width, one float32 ulp); per product, ~1.2x faster on ML-100K- and ML-1M-sized graphs."""

    @staticmethod
    def forward(ctx, adj, x, n_layers):
        ctx.adj, ctx.n_layers = adj, n_layers
        with torch.autocast(x.device.type, enabled=False):
            blocks = _column_blocks(x.float())
            total = [b.clone() for b in blocks]
            for _ in range(n_layers):
                blocks = [_spmm(adj, b) for b in blocks]
                for t, b in zip(total, blocks):
                    t += b
            return torch.cat(total, 1).div_(n_layers + 1)

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(grad.device.type, enabled=False):
            h = _column_blocks(grad.float() / (ctx.n_layers + 1))
            out = h
            for _ in range(ctx.n_layers):
                out = [_spmm(ctx.adj, o).add_(hb) for o, hb in zip(out, h)]
            return None, torch.cat(out, 1), None


BLOCK_BYTES = 512 * 1024  # a column block of the propagated table at most this big (a core's L2) ...
MIN_BLOCK_COLUMNS = 16    # ... unless that would make it narrower than this


def _column_blocks(x: torch.Tensor) -> list[torch.Tensor]:
    """x [n, d] as contiguous [n, d / k] column blocks, k a power of two (1: x itself)."""
    n, d = x.shape
    k = 1
    while n * (d // k) * x.element_size() > BLOCK_BYTES and d % (2 * k) == 0 and d // (2 * k) >= MIN_BLOCK_COLUMNS:
        k *= 2
    if k == 1:
        return [x.contiguous()]
    return list(x.reshape(n, k, d // k).transpose(0, 1).contiguous().unbind(0))


def _spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """adj @ x in float32 whatever the autocast: torch's CPU sparse CSR matmul has no bfloat16
    kernel (and autocast would send it one), so under mixed_precision bf16 the propagation stays
    float32."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.sparse.mm(adj, x.float())


class LightGCN(_BPR):
    """He et al. 2020: K rounds of propagation over the normalised user-item graph,
    final embedding = mean of the K+1 layers. Propagation is cached while not training."""

    name = "lightgcn"

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        self.n_layers = int(cfg.get("n_layers", 3))
        self.adj: torch.Tensor | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_graph(self, data: Interactions) -> None:
        """D^-1/2 A D^-1/2 over users + items, as a torch sparse CSR tensor."""
        n = self.n_users + self.n_items
        rows = np.concatenate([data.uids, data.iids + self.n_users])
        cols = np.concatenate([data.iids + self.n_users, data.uids])
        deg = np.bincount(rows, minlength=n).astype(np.float32)
        inv = np.where(deg > 0, deg ** -0.5, 0.0).astype(np.float32)
        vals = inv[rows] * inv[cols]
        coo = torch.sparse_coo_tensor(np.stack([rows, cols]), vals, (n, n), check_invariants=False)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we want
            warnings.simplefilter("ignore", UserWarning)
            csr = coo.coalesce().to_sparse_csr()
            if csr.values().numel() < 2 ** 31 - 1:
                # int32 indices, as MKL's sparse matmul takes them: with torch's int64 default
                # every product first converts both index arrays (~7% of its time on ML-100K)
                csr = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(),
                                              csr.shape)
            self.adj = csr
        self._cache = None

    def attach(self, data: Interactions) -> None:
        self.set_graph(data)

    def batches(self, data, rng):
        if self.adj is None:
            self.set_graph(data)
        yield from super().batches(data, rng)

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def final_tables(self):
        if self.adj is None:
            raise RuntimeError("LightGCN: call set_graph(train data) before scoring")
        if self._cache is not None and not self.training:
            return self._cache
        out = _Propagate.apply(self.adj, torch.cat([self.user.weight, self.item.weight]), self.n_layers)
        u, i = out[:self.n_users], out[self.n_users:]
        if not self.training:
            self._cache = (u.detach(), i.detach())
        return u, i

    def tables(self):
        with torch.no_grad():
            u, i = self.final_tables()
        return u.detach(), i.detach()


class _Pointwise(_Embeddings):
    """Pointwise BCE: each positive with `n_negatives` sampled negatives (NCF's setting)."""

    def batches(self, data, rng):
        seen = SeenPairs(data)
        k = int(self.cfg.get("n_negatives", 4))
        users = np.repeat(data.uids, k + 1)
        items = np.repeat(data.iids, k + 1)
        labels = np.tile(np.r_[1.0, np.zeros(k)], len(data.uids)).astype(np.float32)
        neg_rows = labels == 0
        items[neg_rows] = uniform_negatives(rng, users[neg_rows], seen)
        for idx in epoch_order(rng, len(users), int(self.cfg.get("batch_size", 2048))):
            yield {"user": _tensor(users[idx]), "item": _tensor(items[idx]), "label": _tensor(labels[idx])}

    def loss(self, batch):
        logits = self.logits(batch["user"], batch["item"])
        return F.binary_cross_entropy_with_logits(logits, batch["label"])

    def score(self, users, items):
        b, c = items.shape
        return self.logits(users[:, None].expand(b, c).reshape(-1), items.reshape(-1)).view(b, c)

    def score_all(self, users):
        return self.score(users, torch.arange(self.n_items).expand(len(users), -1))


class GMF(_Pointwise):
    name = "gmf"

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        self.out = nn.Linear(int(cfg.get("dim", 64)), 1)

    def pair_features(self, users, items) -> torch.Tensor:
        return self.user(users) * self.item(items)

    def logits(self, users, items):
        return self.out(self.pair_features(users, items)).squeeze(-1)


class NeuMF(_Pointwise):
    """He et al. 2017 NCF: GMF branch and MLP branch on separate tables, fused by a linear
    layer. The exported tables are the GMF ones (the MLP tables are concatenated in)."""

    name = "ncf"

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        d = int(cfg.get("dim", 64))
        self.user_mlp = nn.Embedding(n_users, d)
        self.item_mlp = nn.Embedding(n_items, d)
        nn.init.normal_(self.user_mlp.weight, std=0.1)
        nn.init.normal_(self.item_mlp.weight, std=0.1)
        self.mlp = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Dropout(float(cfg.get("dropout", 0.0))),
                                 nn.Linear(d, d // 2), nn.ReLU())
        self.out = nn.Linear(d + d // 2, 1)

    def pair_features(self, users, items) -> torch.Tensor:
        """[GMF product ; last MLP hidden layer]: what the output layer reads (BDLM's DRS input)."""
        gmf = self.user(users) * self.item(items)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], -1))
        return torch.cat([gmf, mlp], -1)

    def logits(self, users, items):
        return self.out(self.pair_features(users, items)).squeeze(-1)

    def live_tables(self):
        return (torch.cat([self.user.weight, self.user_mlp.weight], 1),
                torch.cat([self.item.weight, self.item_mlp.weight], 1))

    def tables(self):
        return tuple(t.detach() for t in self.live_tables())


class MFRating(_Embeddings):
    """Biased MF regressor for rating prediction (RMSE/MAE): r = mu + b_u + b_i + p_u.q_i."""

    name = "mf_rating"
    predicts_ratings = True

    def __init__(self, n_users, n_items, cfg):
        super().__init__(n_users, n_items, cfg)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("mu", torch.zeros(()))

    def batches(self, data, rng):
        self.mu.fill_(float(data.ratings.mean()))
        for idx in epoch_order(rng, len(data.uids), int(self.cfg.get("batch_size", 2048))):
            yield {"user": _tensor(data.uids[idx]), "item": _tensor(data.iids[idx]),
                   "rating": _tensor(data.ratings[idx])}

    def predict(self, users, items):
        return (self.mu + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
                + (self.user(users) * self.item(items)).sum(-1))

    def loss(self, batch):
        reg = float(self.cfg.get("reg", 1e-4))
        return F.mse_loss(self.predict(batch["user"], batch["item"]), batch["rating"]) + reg * (
            self.user(batch["user"]).pow(2).sum(-1).mean() + self.item(batch["item"]).pow(2).sum(-1).mean())

    def score_all(self, users):
        return (self.mu + self.user_bias(users) + self.item_bias.weight.T + self.user(users) @ self.item.weight.T)
