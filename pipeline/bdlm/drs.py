"""The domain model with LLM knowledge (docs/design.md eq. 4): the LLM feature h, the DRS head, its projection
into M, checks of the two id spaces, and BDLM-drs scoring."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from pipeline.eval import metrics
from pipeline.bdlm.sharing import LLMRows
from pipeline.errors import PipelineError
from pipeline.llm.base import is_seq2seq
from pipeline.llm.encoding import prompt_batch
from pipeline.llm.forward import prompt_forward
from pipeline.precision import autocast
from pipeline.llm.vocab import orthonormal_projection
from pipeline.models.base import DomainModel


def llm_features(model, tokenizer, prompts: list[str], max_len: int, pooling: str = "last",
                 precision: str = "no") -> torch.Tensor:
    """h for each prompt: the LLM's top-layer feature [B, hidden], no gradient, pooled as
    pipeline.llm.forward.prompt_forward says (`last` or `mean`), with the same prompt budget
    and truncation as scoring (pipeline.llm.encoding.prompt_batch)."""
    seq2seq = is_seq2seq(model)
    start = model.config.decoder_start_token_id if seq2seq else None
    batch, pos, _ = prompt_batch(tokenizer, prompts, max_len, start)
    device = model.get_input_embeddings().weight.device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast(precision, device):
        _, h = prompt_forward(model, batch, pos.to(device), pooling)
    model.train(was_training)
    return h


# ----------------------------------------------------------------------------- DRS side


class DRS(nn.Module):
    """A domain model with the LLM feature (eq. 4) and its projection P: d -> h into M."""

    def __init__(self, domain: DomainModel, hidden: int, proj: torch.Tensor | None):
        super().__init__()
        if not hasattr(domain, "pair_features") or not hasattr(domain, "live_tables"):
            raise PipelineError(f"domain model '{domain.name}' has no pair_features/live_tables: "
                                "BDLM's DRS supports lightgcn, ncf, gmf, mf")
        self.domain = domain
        d = int(domain.live_tables()[0].shape[1])
        self.dim, self.hidden = d, hidden
        if proj is None:  # d == hidden: the rows as they are; else no M (an LLM without id tokens)
            self.proj = None
        else:
            self.proj = nn.Linear(d, hidden, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(proj.T)
        with torch.no_grad():
            f = domain.pair_features(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        self.feature_dim = int(f.shape[-1])
        self.head = nn.Linear(hidden + self.feature_dim, 1)
        # h enters the head scaled by 1/sqrt(hidden). An LLM's top-layer features share a large
        # common component (SmolLM2: |h| ~ 48, mean |h_k| ~ 1.1 over 576 dims), so one Adam
        # step moves every w_h coordinate by ~lr in the same direction for all prompts: unscaled,
        # that swings every logit by ~lr * hidden * mean|h_k| (0.65 at lr 1e-3) each step and the
        # DRS forgets its pretrained ranking within a few steps; scaled, by ~lr * sqrt(hidden).
        # A reparametrisation of w_h: the score is still sigmoid(w^T [h ; f] + b).
        self.h_scale = float(hidden) ** -0.5
        with torch.no_grad():  # start as the domain model: w_h = 0, w_f = its own output layer
            self.head.weight.zero_()
            out = getattr(domain, "out", None)
            if isinstance(out, nn.Linear) and out.in_features == self.feature_dim:
                self.head.weight[:, hidden:] = out.weight
                self.head.bias.copy_(out.bias)
            else:
                self.head.weight[:, hidden:] = 1.0
                self.head.bias.zero_()

    @property
    def projection(self) -> str:
        if self.proj is None:
            return (f"identity (domain dim {self.dim} == hidden {self.hidden})" if self.dim == self.hidden
                    else "none (no sharing module)")
        return f"learned linear {self.dim} -> {self.hidden} owned by the DRS"

    def logits(self, h: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """w^T [h ; f(u, i)] + b for aligned rows h [B, hidden], users [B], items [B] (docs/design.md eq. 4)."""
        h = h.to(self.head.weight.dtype) * self.h_scale
        return self.head(torch.cat([h, self.domain.pair_features(users, items)], -1)).squeeze(-1)

    def shared_rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """P(E^drs) rows of the user or item table (with gradients): the DRS side of docs/design.md eq. 5 and 7."""
        u, i = self.domain.live_tables()
        rows = (u if name == "user" else i)[ids]
        if self.proj is None and self.dim != self.hidden:
            raise PipelineError(f"DRS: domain dim {self.dim} != LLM hidden size {self.hidden} and no projection: "
                                "this DRS has no rows in the sharing module")
        return rows if self.proj is None else self.proj(rows)

    def table(self, name: str) -> torch.Tensor:
        u, i = self.domain.live_tables()
        n = (u if name == "user" else i).shape[0]
        with torch.no_grad():
            return self.shared_rows(name, torch.arange(n)).detach()


def initial_projection(domain: DomainModel, llm_rows: LLMRows, seed: int) -> tuple[torch.Tensor | None, float]:
    """P's starting value (docs/design.md eq. 2): expand_vocab's fixed orthonormal d x h projection (same seed),
    scaled so P(E^drs) has the mean row norm of the LLM's user+item token rows (what
    expand_vocab's pe mode did); None when d == h (the rows were copied as they are)."""
    with torch.no_grad():
        u, i = domain.live_tables()
        dom = torch.cat([u, i]).detach().float()
        h = llm_rows.hidden
        if dom.shape[1] == h:
            return None, 1.0
        q = orthonormal_projection(dom.shape[1], h, seed)
        target = torch.cat([llm_rows.table("user"), llm_rows.table("item")]).float().norm(dim=1).mean()
        scale = float(target / (dom @ q).norm(dim=1).mean().clamp(min=1e-12))
    return q * scale, scale


def check_id_spaces(vocab: dict, vocab_file: str, domain_cfg: dict, domain_file: str) -> None:
    """The LLM's token ids and the domain model's rows must index the same users and items."""
    got = {k: (vocab.get(k), domain_cfg.get(k)) for k in ("n_users", "n_items")}
    if any(a != b for a, b in got.values()):
        raise PipelineError(f"id spaces disagree: {vocab_file} has {got['n_users'][0]} users x {got['n_items'][0]} "
                            f"items but {domain_file} has {got['n_users'][1]} x {got['n_items'][1]}; "
                            "re-run expand_vocab/pretrain_domain on the same k-core")


# ----------------------------------------------------------------------------- BDLM-drs scoring


def _rows(t: pa.Table, task: str) -> pa.Table:
    return t.filter(pc.equal(t["task"], task))


PairH = Callable[[list[str], list[list[int]]], list[torch.Tensor]]


def pair_h_by_prefix(features: PairH, prefixes: list[str], items: list[list[int]]) -> list[torch.Tensor]:
    """`features` called once per distinct prefix (a user's valid or test rows share theirs:
    the interaction pair and the 20 top-K candidates then cost one prefix pass)."""
    order: dict[str, list[int]] = {}
    for r, p in enumerate(prefixes):
        order.setdefault(p, []).append(r)
    keys = list(order)
    merged = [[i for r in order[p] for i in items[r]] for p in keys]
    h = features(keys, merged)
    out: list[torch.Tensor | None] = [None] * len(prefixes)
    for p, hp in zip(keys, h):
        at = 0
        for r in order[p]:
            out[r] = hp[at:at + len(items[r])]
            at += len(items[r])
    return out


@torch.no_grad()
def evaluate_drs(drs: DRS, features: PairH, valid: pa.Table, test: pa.Table) -> pa.Table:
    """BDLM-drs's per-user outcomes (pipeline.eval.metrics.Outcomes) on interaction prediction (valid
    rows fix the threshold) and top-K, h read from the pair prompt of every scored (user,
    item): for top-K, one h per candidate (docs/design.md eq. 4). `features(prefix texts,
    item lists)` gives h [len(items), hidden] per prefix (pipeline.bdlm.features)."""
    drs.eval()
    out = metrics.Outcomes()
    inter = {"valid": _rows(valid, "interaction"), "test": _rows(test, "interaction")}
    topk = _rows(test, "topk")
    cands = metrics.candidate_matrix(topk) if len(topk) else np.zeros((0, 0), dtype=np.int64)
    # one call over every scored row: a user's test interaction pair and top-K candidates share
    # their prefix, which is then read once
    parts = [(t["pair_prefix"].to_pylist(), [[int(i)] for i in t["iid"].to_numpy()]) for t in inter.values()]
    parts.append((topk["pair_prefix"].to_pylist(), cands.tolist()))
    h = pair_h_by_prefix(features, [p for ps, _ in parts for p in ps], [i for _, its in parts for i in its])
    at = 0
    for name, t in inter.items():
        if len(t):
            s = drs.logits(torch.cat(h[at:at + len(t)]), torch.tensor(t["uid"].to_numpy(), dtype=torch.long),
                           torch.tensor(t["iid"].to_numpy().astype(np.int64)))
            out.binary(name, t["uid"].to_numpy(), t["label"].to_numpy(), s.numpy().astype(np.float64))
        at += len(t)
    if len(topk):
        users = topk["uid"].to_numpy().astype(np.int64)
        s = np.stack([drs.logits(hr, torch.full((len(c),), int(u)), torch.tensor(c)).numpy()
                      for hr, u, c in zip(h[at:], users, cands)])
        out.candidates("topk", topk["uid"].to_numpy(), s.astype(np.float64), topk["label_index"].to_numpy())
    return out.table()


def save_drs(drs: DRS, path: Path, metadata: dict[str, str]) -> None:
    from pipeline.artifacts import write_safetensors

    write_safetensors(drs.state_dict(), path, metadata)


def load_drs(path: Path, domain: DomainModel, hidden: int, train) -> DRS:
    """The trained DRS in `path` around a freshly built `domain` model (its config from the
    joint run's config.json); `train` (Interactions) rebuilds what LightGCN scores with."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    proj = state.get("proj.weight")
    domain.attach(train)  # before building: LightGCN needs its graph to read its tables
    drs = DRS(domain, hidden, None if proj is None else torch.zeros(proj.shape[1], proj.shape[0]))
    try:
        drs.load_state_dict(state)
    except RuntimeError as e:
        raise PipelineError(f"{path}: weights do not fit the DRS built from its config ({e})") from e
    return drs.eval()  # eval() also drops LightGCN's propagation cache of the random init
