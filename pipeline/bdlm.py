"""BDLM joint training: deep mutual learning between the LLM and a domain model (DRS).

DESIGN.md, "The BDLM method, written out", steps 4-7 and Algorithm 1:

- **Sharing module M** (`Sharing`): a user table and an item table in the LLM hidden space
  (h), initialised from the LLM's pre-loaded `<uid_k>`/`<iid_k>` rows. They are buffers, not
  parameters: no optimizer owns them, each side *writes* its rows into them after its step
  and reads them (detached) as the target of its mutual-learning loss.
- **DRS with LLM knowledge** (`DRS`, eq. 4): score = sigmoid(w^T [h ; f_Phi(u, i)] + b), h the
  LLM's top-layer feature of the prompt (`llm_features`: the last non-pad prompt token's
  final hidden state, or the mean over prompt tokens), f_Phi the domain model's
  `pair_features` (LightGCN: propagated e_u * e_i; NCF: [GMF product ; last MLP layer]).
  The head starts as the domain model itself (w_f = its output weights, or ones for a
  dot-product model; w_h = 0), so step 0 scores exactly as the pretrained model. The DRS
  reaches M through its own learned projection P: d -> h (identity when d == h),
  initialised as the fixed orthonormal projection expand_vocab pre-loaded with, rescaled
  so P(E^drs) has the mean norm of the LLM's new rows.
- **Alternation** (`JointTrainer`): per step, (a) an LLM step on L_llm + lambda L_ml^llm
  (AdamW + cosine schedule, as in pipeline.llm.sft), then the LLM's rows for the batch's
  users/items are written into M; (b) `drs_per_llm` DRS steps on L_drs + lambda L_ml^drs
  (Adam), h computed by the just-updated LLM (detached: the LLM learns from its own loss
  only), then P(E^drs) rows written into M. Batches are pure functions of (seed, step), so
  a run resumed from a checkpoint ends bitwise where an uninterrupted one does.

Single process: the LLM on its device (CPU or one GPU), the DRS and M on the CPU (small);
the LLM update is sft's (batches, AdamW, cosine schedule), not its accelerate/DeepSpeed path.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from pipeline import metrics
from pipeline.errors import PipelineError
from pipeline.llm.base import is_seq2seq
from pipeline.llm.encoding import collate, encode, prompt_batch
from pipeline.llm.sft import SFTConfig, batch_indices, training_pairs
from pipeline.llm.vocab import orthonormal_projection
from pipeline.models.base import DomainModel

SHARE = ("users", "items", "both")
POOLING = ("last", "mean")


@dataclass(frozen=True)
class JointConfig:
    steps: int = 24                 # LLM steps (each followed by drs_per_llm DRS steps)
    batch_size: int = 4             # LLM training prompts per step
    drs_batch_size: int = 4         # interaction prompts per DRS step
    drs_per_llm: int = 1            # Algorithm 1 alternates one and one
    lam: float = 0.01               # lambda, weight of the mutual-learning loss (params: joint.lambda)
    share: str = "both"             # which tables go through M: users, items, both
    pooling: str = "last"           # h = last non-pad prompt token's final hidden state, or mean
    lr: float = 2e-4                # LLM, AdamW + cosine schedule with warmup
    weight_decay: float = 0.0
    warmup_steps: int = 2
    drs_lr: float = 1e-3            # DRS, Adam (paper: 1e-4 with far more steps)
    max_len: int = 256
    checkpoint_every: int = 8
    seed: int = 2024

    def check(self) -> "JointConfig":
        if not self.lam >= 0:
            raise PipelineError(f"params.yaml: joint.lambda (mutual-learning weight) must be >= 0, got {self.lam}")
        if self.share not in SHARE:
            raise PipelineError(f"params.yaml: joint.train.share must be one of {list(SHARE)}, got {self.share!r}")
        if self.pooling not in POOLING:
            raise PipelineError(f"params.yaml: joint.train.pooling must be one of {list(POOLING)}, got {self.pooling!r}")
        for key in ("steps", "batch_size", "drs_batch_size", "drs_per_llm", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise PipelineError(f"params.yaml: joint.train.{key} must be >= 1, got {getattr(self, key)}")
        return self

    def params_hash(self, inputs: dict | None = None) -> str:
        blob = json.dumps({"cfg": asdict(self), "inputs": inputs or {}}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- data


@dataclass
class JointData:
    """Encoded LLM training prompts (with their users/items) and the DRS's interaction prompts."""

    llm_enc: object                 # pipeline.llm.encoding.Encoded
    llm_users: np.ndarray
    llm_items: np.ndarray
    drs_prompts: list[str]
    drs_users: np.ndarray
    drs_items: np.ndarray
    drs_labels: np.ndarray

    @classmethod
    def build(cls, table: pa.Table, tokenizer, seq2seq: bool, weights: dict[str, float], aux: bool,
              cfg: JointConfig) -> "JointData":
        # the LLM's rows: sft's selection (task weights, aux) on row numbers, so each keeps its uid/iid
        numbered = table.set_column(table.schema.get_field_index("prompt"), "prompt",
                                    pa.array([str(i) for i in range(len(table))]))
        rows = np.asarray([int(r) for r in training_pairs(numbered, weights, aux, cfg.seed)[0]], dtype=np.int64)
        inter = table.filter(pc.and_(pc.equal(table["task"], "interaction"), pc.greater_equal(table["label"], 0)))
        if not len(rows):
            raise PipelineError("joint: no LLM training prompts: check joint.train.task_weights")
        if not len(inter):
            raise PipelineError("joint: no interaction prompts with a 1/0 label: the DRS has nothing to train on")
        prompts, answers = table["prompt"].to_pylist(), table["answer"].to_pylist()
        enc = encode(tokenizer, [prompts[i] for i in rows], [answers[i] for i in rows], seq2seq, cfg.max_len)
        uid, iid = table["uid"].to_numpy().astype(np.int64), table["iid"].to_numpy().astype(np.int64)
        return cls(enc, uid[rows], iid[rows], inter["prompt"].to_pylist(),
                   inter["uid"].to_numpy().astype(np.int64), inter["iid"].to_numpy().astype(np.int64),
                   inter["label"].to_numpy().astype(np.float32))


def _ids(a: np.ndarray) -> torch.Tensor:
    a = np.unique(a[a >= 0])
    return torch.tensor(a, dtype=torch.long)


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


def llm_features(model, tokenizer, prompts: list[str], max_len: int, pooling: str = "last") -> torch.Tensor:
    """h for each prompt: the LLM's top-layer feature [B, hidden], no gradient.

    `last`: decoder-only, the final hidden state at the last prompt token (the position whose
    logits give the first answer token, right padding excluded); seq2seq, the decoder's final
    hidden state at its start position (likewise the one predicting the first answer token).
    `mean`: the mean over the prompt tokens of the last (decoder-only) or encoder (seq2seq) layer.
    The same prompt budget and truncation as scoring (pipeline.llm.encoding.prompt_batch)."""
    seq2seq = is_seq2seq(model)
    start = model.config.decoder_start_token_id if seq2seq else None
    batch, pos, _ = prompt_batch(tokenizer, prompts, max_len, start)
    device = model.get_input_embeddings().weight.device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    model.train(was_training)
    if pooling == "last":
        hs = out.decoder_hidden_states[-1] if seq2seq else out.hidden_states[-1]
        return hs[torch.arange(len(pos), device=device), pos.to(device)].float()
    hs = out.encoder_last_hidden_state if seq2seq else out.hidden_states[-1]
    mask = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)
    return ((hs * mask).sum(1) / mask.sum(1).clamp(min=1)).float()


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
        if proj is None:
            if d != hidden:
                raise PipelineError(f"domain dim {d} != LLM hidden size {hidden}: a projection is needed")
            self.proj = None
        else:
            self.proj = nn.Linear(d, hidden, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(proj.T)
        with torch.no_grad():
            f = domain.pair_features(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        self.feature_dim = int(f.shape[-1])
        self.head = nn.Linear(hidden + self.feature_dim, 1)
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
        return (f"identity (domain dim {self.dim} == hidden {self.hidden})" if self.proj is None
                else f"learned linear {self.dim} -> {self.hidden} owned by the DRS")

    def logits(self, h: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """w^T [h ; f(u, i)] + b for aligned rows h [B, hidden], users [B], items [B]."""
        return self.head(torch.cat([h.to(self.head.weight.dtype), self.domain.pair_features(users, items)], -1)).squeeze(-1)

    def candidate_logits(self, h: torch.Tensor, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """[B, C]: each prompt's h shared by its C candidates."""
        b, c = cands.shape
        return self.logits(h[:, None].expand(b, c, h.shape[-1]).reshape(b * c, -1),
                           users[:, None].expand(b, c).reshape(-1), cands.reshape(-1)).view(b, c)

    def shared_rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """P(E^drs) rows of the user or item table (with gradients)."""
        u, i = self.domain.live_tables()
        rows = (u if name == "user" else i)[ids]
        return rows if self.proj is None else self.proj(rows)

    def table(self, name: str) -> torch.Tensor:
        u, i = self.domain.live_tables()
        n = (u if name == "user" else i).shape[0]
        with torch.no_grad():
            return self.shared_rows(name, torch.arange(n)).detach()


def initial_projection(domain: DomainModel, llm_rows: LLMRows, seed: int) -> tuple[torch.Tensor | None, float]:
    """P's starting value: expand_vocab's fixed orthonormal d x h projection (same seed),
    scaled so P(E^drs) has the mean row norm of the LLM's user+item token rows (what
    expand_vocab's pe mode did); None when d == h (the rows were copied as they are)."""
    with torch.no_grad():
        u, i = domain.live_tables()
        dom = torch.cat([u, i]).detach().float()
        h = llm_rows.model.get_input_embeddings().weight.shape[1]
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


# ----------------------------------------------------------------------------- the loop


class JointTrainer:
    """Algorithm 1 on one LLM and one DRS, resumable (see module doc)."""

    def __init__(self, model, tokenizer, drs: DRS, sharing: Sharing, llm_rows: LLMRows, data: JointData,
                 cfg: JointConfig, params_hash: str | None = None, sides: tuple[str, ...] = ("llm", "drs")):
        self.model, self.tok, self.drs, self.m, self.rows, self.data = model, tokenizer, drs, sharing, llm_rows, data
        self.cfg = cfg.check()
        self.hash = params_hash or cfg.params_hash()
        self.sides = sides
        self.seq2seq = is_seq2seq(model)
        self.device = model.get_input_embeddings().weight.device
        self.tables = shared_tables(cfg.share)
        torch.manual_seed(cfg.seed)
        self.llm_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                         weight_decay=cfg.weight_decay)
        self.llm_sched = get_cosine_schedule_with_warmup(self.llm_opt, cfg.warmup_steps, cfg.steps)
        self.drs_opt = torch.optim.Adam(drs.parameters(), lr=cfg.drs_lr)
        self._llm_batches = SFTConfig(batch_size=cfg.batch_size, grad_accum=1, seed=cfg.seed)
        self._drs_batches = SFTConfig(batch_size=cfg.drs_batch_size, grad_accum=1, seed=cfg.seed + 1)
        # h for a DRS batch: the current LLM's feature (tests may replace it to replay features)
        self.features: Callable[[list[str]], torch.Tensor] = lambda prompts: llm_features(
            self.model, self.tok, prompts, cfg.max_len, cfg.pooling)
        self.step, self.history = 0, []

    # -- one side each
    def _ml(self, rows_of: Callable[[str, torch.Tensor], torch.Tensor], ids: dict[str, torch.Tensor]) -> torch.Tensor:
        """sum over shared tables of MSE(side's rows, M's rows) for the batch's ids."""
        total = torch.zeros(())
        for name in self.tables:
            if len(ids[name]):
                rows = rows_of(name, ids[name]).float()
                total = total.to(rows.device) + F.mse_loss(rows, self.m.table(name)[ids[name]].to(rows.device))
        return total

    def llm_step(self, step: int) -> dict:
        idx = batch_indices(len(self.data.llm_enc.input_ids), self._llm_batches, step, 0)
        ids = {"user": _ids(self.data.llm_users[idx]), "item": _ids(self.data.llm_items[idx])}
        batch = {k: v.to(self.device) for k, v in
                 collate(self.data.llm_enc, idx, self.tok.pad_token_id, self.seq2seq).items()}
        self.model.train()
        task = self.model(**batch).loss
        if self.cfg.lam > 0:
            ml = self._ml(self.rows.rows, ids)
            loss = task + self.cfg.lam * ml
        else:  # lambda = 0: the LLM's update is exactly plain SFT's
            with torch.no_grad():
                ml = self._ml(self.rows.rows, ids)
            loss = task
        loss.backward()
        self.llm_opt.step()
        self.llm_sched.step()
        self.llm_opt.zero_grad()
        with torch.no_grad():
            for name in self.tables:
                self.m.write(step, "llm", name, ids[name], self.rows.rows(name, ids[name]))
        return {"llm_loss": task.item(), "llm_ml": ml.item(), "lr": self.llm_sched.get_last_lr()[0]}

    def drs_step(self, step: int, k: int) -> dict:
        idx = batch_indices(len(self.data.drs_prompts), self._drs_batches, step * self.cfg.drs_per_llm + k, 0)
        users = torch.tensor(self.data.drs_users[idx], dtype=torch.long)
        items = torch.tensor(self.data.drs_items[idx], dtype=torch.long)
        labels = torch.tensor(self.data.drs_labels[idx])
        h = self.features([self.data.drs_prompts[i] for i in idx]).detach().cpu()
        ids = {"user": _ids(users.numpy()), "item": _ids(items.numpy())}
        self.drs.train()
        task = F.binary_cross_entropy_with_logits(self.drs.logits(h, users, items), labels)
        if self.cfg.lam > 0:
            ml = self._ml(self.drs.shared_rows, ids)
            loss = task + self.cfg.lam * ml
        else:
            with torch.no_grad():
                ml = self._ml(self.drs.shared_rows, ids)
            loss = task
        loss.backward()
        self.drs_opt.step()
        self.drs_opt.zero_grad()
        with torch.no_grad():
            for name in self.tables:
                self.m.write(step, "drs", name, ids[name], self.drs.shared_rows(name, ids[name]))
        return {"drs_loss": task.item(), "drs_ml": ml.item()}

    # -- checkpoints
    def state(self) -> dict:
        return {"llm": self.model.state_dict(), "llm_opt": self.llm_opt.state_dict(),
                "llm_sched": self.llm_sched.state_dict(), "drs": self.drs.state_dict(),
                "drs_opt": self.drs_opt.state_dict(), "sharing": self.m.state_dict(),
                "rng": torch.get_rng_state(), "step": self.step, "history": self.history,
                "params_hash": self.hash}

    def save(self, folder: Path) -> None:
        """The whole training state to folder/latest, swapped in only once complete."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp, final, old = folder / f".step-{self.step}.tmp", folder / "latest", folder / ".latest.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(self.state(), tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps({"step": self.step, "params_hash": self.hash}))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def resume(self, folder: Path | None) -> bool:
        if folder is None or not (folder / "latest" / "progress.json").exists():
            return False
        latest = folder / "latest"
        recorded = json.loads((latest / "progress.json").read_text()).get("params_hash")
        if recorded != self.hash:
            raise PipelineError(f"{latest}: checkpoint was written with params hash {recorded}, this run has "
                                f"{self.hash}; refusing to resume into it (nothing overwritten): "
                                "delete the folder or restore the params")
        s = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
        self.model.load_state_dict(s["llm"])
        self.llm_opt.load_state_dict(s["llm_opt"])
        self.llm_sched.load_state_dict(s["llm_sched"])
        self.drs.load_state_dict(s["drs"])
        self.drs_opt.load_state_dict(s["drs_opt"])
        self.m.load_state_dict(s["sharing"])
        torch.set_rng_state(s["rng"])
        self.step, self.history = s["step"], s["history"]
        return True

    def run(self, checkpoints: Path | None = None, stop_after: int | None = None,
            log: Callable[[str], None] = print) -> list[dict]:
        """Train to cfg.steps (or `stop_after` steps, writing a checkpoint: tests simulate a kill)."""
        if self.resume(checkpoints):
            log(f"[joint] resuming at step {self.step} from {checkpoints / 'latest'}")
        while self.step < self.cfg.steps:
            step = self.step
            rec: dict = {"step": step + 1}
            if "llm" in self.sides:
                rec.update(self.llm_step(step))
            if "drs" in self.sides:
                drs = [self.drs_step(step, k) for k in range(self.cfg.drs_per_llm)]
                rec.update({key: float(np.mean([d[key] for d in drs])) for key in drs[0]})
            self.history.append(rec)
            self.step = done = step + 1
            if step % 5 == 0 or done == self.cfg.steps:
                log(f"[joint] step {done}/{self.cfg.steps} " + " ".join(
                    f"{k}={v:.4f}" for k, v in rec.items() if k != "step"))
            stop = stop_after is not None and done >= stop_after
            if checkpoints is not None and done < self.cfg.steps and (done % self.cfg.checkpoint_every == 0 or stop):
                self.save(checkpoints)
            if stop:
                break
        self.model.eval()
        self.drs.eval()
        return self.history


# ----------------------------------------------------------------------------- BDLM-drs scoring


def _rows(t: pa.Table, task: str) -> pa.Table:
    return t.filter(pc.equal(t["task"], task))


def _features(model, tokenizer, prompts: list[str], max_len: int, pooling: str, batch: int) -> torch.Tensor:
    out = [llm_features(model, tokenizer, prompts[s:s + batch], max_len, pooling).cpu()
           for s in range(0, len(prompts), batch)]
    return torch.cat(out) if out else torch.zeros(0, model.get_input_embeddings().weight.shape[1])


@torch.no_grad()
def evaluate_drs(drs: DRS, model, tokenizer, valid: pa.Table, test: pa.Table, max_len: int, pooling: str,
                 batch: int = 16) -> dict:
    """BDLM-drs on interaction prediction (threshold on valid) and top-K (h of the top-K prompt
    shared by its candidates), through pipeline.metrics."""
    drs.eval()
    out: dict[str, dict] = {}
    scores = {}
    for name, t in (("valid", _rows(valid, "interaction")), ("test", _rows(test, "interaction"))):
        if len(t):
            h = _features(model, tokenizer, t["prompt"].to_pylist(), max_len, pooling, batch)
            s = drs.logits(h, torch.tensor(t["uid"].to_numpy(), dtype=torch.long),
                           torch.tensor(t["iid"].to_numpy(), dtype=torch.long))
            scores[name] = (s.numpy().astype(np.float64), t["label"].to_numpy())
    if len(scores) == 2:
        out["binary"] = metrics.binary_metrics(*scores["test"], metrics.best_threshold(*scores["valid"]))
    t = _rows(test, "topk")
    if len(t):
        h = _features(model, tokenizer, t["prompt"].to_pylist(), max_len, pooling, batch)
        cands = torch.tensor(np.stack(t["candidates"].to_numpy(zero_copy_only=False)).astype(np.int64))
        s = drs.candidate_logits(h, torch.tensor(t["uid"].to_numpy(), dtype=torch.long), cands)
        out["topk"] = metrics.candidate_metrics(s.numpy().astype(np.float64), t["label_index"].to_numpy(),
                                                (1, 2, 5, 10))
    return out


def save_drs(drs: DRS, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from pipeline.artifacts import atomic_path

    state = {k: v.detach().contiguous().cpu() for k, v in drs.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


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
