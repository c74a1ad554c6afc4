"""Algorithm 1: the joint-training config, its data and the alternating loop with
checkpoints (pipeline/checkpoint.py)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from pipeline.eval import metrics
from pipeline.bdlm.drs import DRS
from pipeline.bdlm.features import PairPrompts, pair_features
from pipeline.bdlm.sharing import LLMRows, Sharing, shared_tables
from pipeline.checkpoint import Checkpointer
from pipeline.errors import PipelineError
from pipeline.llm.base import is_seq2seq
from pipeline.llm.encoding import collate, encode
from pipeline.llm.forward import answer_loss
from pipeline.llm.sft import (SFTConfig, accelerator, batch_indices, nonfinite_processes, prepare_optimization,
                              training_pairs)

log = logging.getLogger(__name__)

SHARE = ("users", "items", "both")
POOLING = ("last", "mean")


@dataclass(frozen=True)
class JointConfig:
    steps: int = 24                 # LLM steps (each followed by drs_per_llm DRS steps)
    batch_size: int = 4             # shared instances per step (the LLM's prompts, the DRS's pairs)
    drs_batch_size: int = 16        # cached-pool instances per extra DRS step
    drs_per_llm: int = 8            # DRS steps per LLM step: one on the step's instances, the rest on the pool
    lam: float = 0.01               # lambda, weight of the mutual-learning loss (params: joint.lambda)
    share: str = "both"             # which tables go through M: users, items, both
    pooling: str = "last"           # h = last non-pad prompt token's final hidden state, or mean
    lr: float = 2e-4                # LLM, AdamW + cosine schedule with warmup
    weight_decay: float = 0.0
    warmup_steps: int = 2
    drs_lr: float = 1e-4            # the DRS's domain model and projection P, Adam (paper: 1e-4)
    drs_head_lr: float = 1e-3       # the DRS's fusion head [w_h ; w_f], b
    drs_domain_weight: float = 1.0  # weight of the domain model's own objective (BPR / BCE) in L_drs
    drs_pool: int = 128             # instances whose h is cached per LLM snapshot (the extra DRS steps)
    refresh_every: int = 8          # LLM steps between refreshes of the cached h (and DRS snapshots)
    max_len: int = 256
    checkpoint_every: int = 8
    seed: int = 2024
    mixed_precision: str = "no"     # LLM forward passes: "no", "bf16" or "auto" (pipeline.precision)

    def check(self) -> "JointConfig":
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise PipelineError(f"params.yaml: joint.lambda (mutual-learning weight) must be a number >= 0, got {self.lam}")
        if self.share not in SHARE:
            raise PipelineError(f"params.yaml: joint.train.share must be one of {list(SHARE)}, got {self.share!r}")
        if self.pooling not in POOLING:
            raise PipelineError(f"params.yaml: joint.train.pooling must be one of {list(POOLING)}, got {self.pooling!r}")
        for key in ("steps", "batch_size", "drs_batch_size", "drs_per_llm", "checkpoint_every", "refresh_every",
                    "drs_pool"):
            if getattr(self, key) < 1:
                raise PipelineError(f"params.yaml: joint.train.{key} must be >= 1, got {getattr(self, key)}")
        if not self.drs_domain_weight >= 0:
            raise PipelineError(f"params.yaml: joint.train.drs_domain_weight must be >= 0, got {self.drs_domain_weight}")
        for key in ("lr", "drs_lr", "drs_head_lr"):
            if not getattr(self, key) > 0:
                raise PipelineError(f"params.yaml: joint.train.{key} must be > 0, got {getattr(self, key)}")
        return self

    def params_hash(self, inputs: dict | None = None) -> str:
        blob = json.dumps({"cfg": asdict(self), "inputs": inputs or {}}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- data


@dataclass
class JointData:
    """The shared instances (u, i, prompt, label) of Algorithm 1: each is an LLM training prompt
    (llm_enc row) and the DRS's (user, item, label) pairs of the same sample, whose h is read
    from the pair prompts prefix + item suffix (pipeline.bdlm.features):

    - interaction (u, i, Yes/No): the pair (u, i) with its label;
    - top-K (u, positive, candidates): (u, positive) 1 and one seeded candidate (u, c) 0;
    - other tasks (retrieval, aux): no DRS pair (the DRS's domain objective covers them).
    """

    llm_enc: object                 # pipeline.llm.encoding.Encoded
    users: np.ndarray               # per instance
    items: np.ndarray
    prefixes: list[list[int]]       # pair-prefix token ids per instance
    pair_items: list[list[int]]     # DRS pair items per instance
    pair_labels: list[list[float]]
    pairs: PairPrompts

    @classmethod
    def build(cls, table: pa.Table, item_suffixes: list[str], tokenizer, seq2seq: bool,
              weights: dict[str, float], aux: bool, cfg: JointConfig) -> "JointData":
        # sft's selection (task weights, aux) on row numbers, so each instance keeps its row
        numbered = table.set_column(table.schema.get_field_index("prompt"), "prompt",
                                    pa.array([str(i) for i in range(len(table))]))
        rows = np.asarray([int(r) for r in training_pairs(numbered, weights, aux, cfg.seed)[0]], dtype=np.int64)
        if not len(rows):
            raise PipelineError("joint: no LLM training prompts: check joint.train.task_weights")
        t = table.take(pa.array(rows))
        if "pair_prefix" not in t.column_names:
            raise PipelineError("joint: the training prompts have no pair_prefix column: re-run `dvc repro build_prompts`")
        rng = np.random.default_rng([cfg.seed, 11])
        tasks, iids, labels = t["task"].to_pylist(), t["iid"].to_pylist(), t["label"].to_pylist()
        cands, where = t["candidates"].to_pylist(), t["label_index"].to_pylist()
        p_items, p_labels = [], []
        for task, i, y, c, at in zip(tasks, iids, labels, cands, where):
            if task == "interaction" and y in (0, 1):
                p_items.append([i]), p_labels.append([float(y)])
            elif task == "topk" and c:
                others = [k for n, k in enumerate(c) if n != at]
                p_items.append([i, int(others[rng.integers(len(others))])]), p_labels.append([1.0, 0.0])
            else:
                p_items.append([]), p_labels.append([])
        if not any(p_items):
            raise PipelineError("joint: no interaction or top-K instance among the training prompts: the DRS has "
                                "nothing to train on (joint.train.task_weights)")
        enc = encode(tokenizer, t["prompt"].to_pylist(), t["answer"].to_pylist(), seq2seq, cfg.max_len)
        pairs = PairPrompts(tokenizer, item_suffixes, cfg.max_len)
        return cls(enc, t["uid"].to_numpy().astype(np.int64), t["iid"].to_numpy().astype(np.int64),
                   pairs.prefixes(t["pair_prefix"].to_pylist()), p_items, p_labels, pairs)


@dataclass
class SelectionSet:
    """Valid top-K rows the DRS is selected on (its user subset): pair prefixes, candidates and
    the positive's index, so h is read exactly as at test time."""

    prefixes: list[list[int]]
    users: np.ndarray
    candidates: list[list[int]]
    label_index: np.ndarray

    @classmethod
    def build(cls, valid: pa.Table, pairs: PairPrompts) -> "SelectionSet":
        t = valid.filter(pc.equal(valid["task"], "topk"))
        if not len(t):
            raise PipelineError("joint: no valid top-K rows to select the DRS on")
        return cls(pairs.prefixes(t["pair_prefix"].to_pylist()), t["uid"].to_numpy().astype(np.int64),
                   t["candidates"].to_pylist(), t["label_index"].to_numpy().astype(np.int64))


def _ids(a: np.ndarray) -> torch.Tensor:
    a = np.unique(a[a >= 0])
    return torch.tensor(a, dtype=torch.long)


def row_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_ml's per-row reading (docs/design.md eq. 5): squared distance summed over the hidden
    dims, averaged over the rows. Averaged over the dims as well (F.mse_loss), it would be h
    times smaller (576 for SmolLM2) and the paper's lambda range would mean nothing."""
    return (a - b).pow(2).sum(-1).mean()


# ----------------------------------------------------------------------------- the loop


class JointTrainer:
    """Algorithm 1 on one LLM and one DRS, resumable (see module doc).

    The LLM goes through accelerate as in sft: one process, or `accelerate launch` with
    DeepSpeed ZeRO-3 (or DDP) over several GPUs. Every process then trains the LLM on its own
    share of the step's instances, writes the rows of the whole step's users/items into M and
    takes the same DRS steps on the same instances, so M and the DRS stay identical everywhere
    (the DRS is small; its LLM features come from the shared LLM weights).

    `sharing`/`llm_rows` None: an LLM without user/item tokens (w/o ET): no M, no L_ml.
    `train` (Interactions): the DRS's domain objective; None leaves it out.
    `selection`: the valid set the DRS is selected on at the end (None: keep the last DRS)."""

    def __init__(self, model, tokenizer, drs: DRS, sharing: Sharing | None, llm_rows: LLMRows | None,
                 data: JointData, cfg: JointConfig, params_hash: str | None = None,
                 sides: tuple[str, ...] = ("llm", "drs"), train=None, selection: SelectionSet | None = None):
        self.model, self.tok, self.drs, self.m, self.rows, self.data = model, tokenizer, drs, sharing, llm_rows, data
        self.cfg = cfg.check()
        self.hash = params_hash or cfg.params_hash()
        self.sides, self.train_data, self.selection = sides, train, selection
        self.seq2seq = is_seq2seq(model)
        self.tables = shared_tables(cfg.share) if sharing is not None else ()
        torch.manual_seed(cfg.seed)
        self.acc = accelerator(cfg.mixed_precision, "joint.train.mixed_precision", cfg.batch_size)
        self.precision = self.acc.mixed_precision
        # engine: what trains (the model itself on one process, its DeepSpeed/DDP wrapper otherwise);
        # self.model stays the transformers model, for features and rows
        self.engine, self.llm_opt, self.llm_sched = prepare_optimization(
            self.acc, model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.steps)
        self.device = self.acc.device
        head = list(drs.head.parameters())
        rest = [p for p in drs.parameters() if all(p is not q for q in head)]
        self.drs_opt = torch.optim.Adam([{"params": head, "lr": cfg.drs_head_lr}, {"params": rest, "lr": cfg.drs_lr}])
        self._batches = SFTConfig(batch_size=cfg.batch_size, grad_accum=1, seed=cfg.seed)
        self._pool_batches = SFTConfig(batch_size=cfg.drs_batch_size, grad_accum=1, seed=cfg.seed + 1)
        with_pairs = [r for r, c in enumerate(data.pair_items) if c]
        pick = np.random.default_rng([cfg.seed, 13]).permutation(len(with_pairs))[:cfg.drs_pool]
        self.pool = np.asarray(sorted(with_pairs[j] for j in pick), dtype=np.int64)
        self.pool_h: list[torch.Tensor] | None = None  # h of the pool's pairs under the last refresh's LLM
        # h of pairs (prefix ids, items) under the current LLM (tests may replace it)
        self.features: Callable[[list[list[int]], list[list[int]]], list[torch.Tensor]] = \
            lambda prefixes, items: pair_features(self.model, self.data.pairs, prefixes, items, cfg.pooling,
                                                  self.precision)
        self.initial = self._tables() if sharing is not None else {}
        self.snapshots: list[tuple[int, dict]] = []  # (step, DRS state) candidates for selection on valid
        self.selected: dict | None = None
        self.step, self.history = 0, []

    # -- shared pieces
    def _tables(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in ("user", "item"):
            out[f"llm.{name}"] = self.rows.table(name).float().cpu()
            out[f"drs.{name}"] = self.drs.table(name).float().cpu()
        return out

    def drift(self) -> dict:
        """How far each side's rows have moved from their start (mean row distance / mean row
        norm at the start), and how far apart the two sides are (mean row distance)."""
        if self.m is None:
            return {}
        now, out = self._tables(), {}
        for key, t in now.items():
            t0 = self.initial[key]
            out[f"drift_{key.replace('.', '_')}"] = float((t - t0).norm(dim=1).mean() / t0.norm(dim=1).mean().clamp(min=1e-12))
        for name in ("user", "item"):
            out[f"gap_{name}"] = float((now[f"llm.{name}"] - now[f"drs.{name}"]).norm(dim=1).mean())
        return out

    def _ml(self, rows_of: Callable[[str, torch.Tensor], torch.Tensor], ids: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_ml (docs/design.md eq. 5): sum over shared tables of row_distance(side's rows, M's rows) for the ids."""
        total = torch.zeros(())
        for name in self.tables:
            if len(ids[name]):
                rows = rows_of(name, ids[name]).float()
                total = total.to(rows.device) + row_distance(rows, self.m.table(name)[ids[name]].to(rows.device))
        return total

    def _pairs(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = [int(self.data.users[r]) for r in idx for _ in self.data.pair_items[r]]
        items = [i for r in idx for i in self.data.pair_items[r]]
        labels = [y for r in idx for y in self.data.pair_labels[r]]
        return (torch.tensor(users, dtype=torch.long), torch.tensor(items, dtype=torch.long),
                torch.tensor(labels, dtype=torch.float32))

    # -- one side each
    def llm_step(self, step: int) -> tuple[dict, list[int]]:
        world = self.acc.num_processes
        shares = [batch_indices(len(self.data.llm_enc.input_ids), self._batches, step, 0, rank, world)
                  for rank in range(world)]
        idx, whole = shares[self.acc.process_index], sum(shares, [])
        ids = {"user": _ids(self.data.users[idx]), "item": _ids(self.data.items[idx])}
        batch = {k: v.to(self.device) for k, v in
                 collate(self.data.llm_enc, idx, self.tok.pad_token_id, self.seq2seq).items()}
        self.engine.train()
        task = answer_loss(self.engine, batch)
        if self.cfg.lam > 0 and self.tables:  # docs/design.md eq. 6 (LLM side), task = eq. 3
            ml = self._ml(self.rows.rows, ids)
            loss = task + self.cfg.lam * ml
        else:  # lambda = 0: the LLM's update is exactly plain SFT's
            with torch.no_grad():
                ml = self._ml(self.rows.rows, ids) if self.tables else torch.zeros(())
            loss = task
        # every process checks every process's loss: one raising alone would leave the others
        # waiting in the next collective
        flags = nonfinite_processes(self.acc, [loss.item()])
        if any(flags):
            where = [r for r, f in enumerate(flags) if f]
            raise PipelineError(f"joint training: the LLM loss is not finite on process(es) {where} at step {step + 1} "
                                f"(this process: task loss {task.item()}, mutual-learning loss {ml.item()}); stopped "
                                "on every process before the update, nothing written: lower the lr or lambda, or "
                                "check the inputs")
        self.acc.backward(loss)
        self.llm_opt.step()
        self.llm_opt.zero_grad()
        self.llm_sched.step()
        every = {"user": _ids(self.data.users[whole]), "item": _ids(self.data.items[whole])}
        with torch.no_grad():  # docs/design.md eq. 7: every process writes the rows of the whole step's users/items
            for name in self.tables:
                self.m.write(step, "llm", name, every[name], self.rows.rows(name, every[name]))
        return {"llm_loss": task.item(), "llm_ml": ml.item(), "lr": self.llm_sched.get_last_lr()[0]}, whole

    def drs_step(self, step: int, k: int, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor,
                 h: torch.Tensor) -> dict:
        """One DRS update on pairs with their h: BCE + the domain objective + lambda L_ml^drs (docs/design.md
        eq. 4 and 6), then its rows written into M (eq. 7)."""
        ids = {"user": _ids(users.numpy()), "item": _ids(items.numpy())}
        self.drs.train()
        task = F.binary_cross_entropy_with_logits(self.drs.logits(h, users, items), labels)
        domain = torch.zeros(())
        if self.train_data is not None and self.cfg.drs_domain_weight > 0:
            rng = np.random.default_rng([self.cfg.seed, 17, step, k])
            domain = self.drs.domain.loss(next(iter(self.drs.domain.batches(self.train_data, rng))))
        loss = task + self.cfg.drs_domain_weight * domain
        if self.cfg.lam > 0 and self.tables:
            ml = self._ml(self.drs.shared_rows, ids)
            loss = loss + self.cfg.lam * ml
        else:
            with torch.no_grad():
                ml = self._ml(self.drs.shared_rows, ids) if self.tables else torch.zeros(())
        _finite(loss, "DRS", step, task, ml)
        loss.backward()
        self.drs_opt.step()
        self.drs_opt.zero_grad()
        with torch.no_grad():
            for name in self.tables:
                self.m.write(step, "drs", name, ids[name], self.drs.shared_rows(name, ids[name]))
        return {"drs_loss": task.item(), "drs_domain": domain.item(), "drs_ml": ml.item()}

    def drs_steps(self, step: int, whole: list[int]) -> dict:
        """Algorithm 1's DRS step on the step's own instances (h from the just-updated LLM),
        then drs_per_llm - 1 steps on the cached pool."""
        recs = []
        mine = [r for r in whole if self.data.pair_items[r]]
        if mine:
            h = torch.cat(self.features([self.data.prefixes[r] for r in mine],
                                        [self.data.pair_items[r] for r in mine]))
            recs.append(self.drs_step(step, 0, *self._pairs(mine), h))
        for k in range(1, self.cfg.drs_per_llm):
            at = batch_indices(len(self.pool), self._pool_batches, step * self.cfg.drs_per_llm + k, 0)
            h = torch.cat([self.pool_h[j] for j in at])
            recs.append(self.drs_step(step, k, *self._pairs(self.pool[at]), h))
        return {key: float(np.mean([r[key] for r in recs])) for key in recs[0]} if recs else {}

    def refresh(self) -> None:
        """Cache h of the pool's pairs under the current LLM."""
        self.pool_h = self.features([self.data.prefixes[r] for r in self.pool],
                                    [self.data.pair_items[r] for r in self.pool])

    def snapshot(self) -> None:
        self.snapshots.append((self.step, {k: v.detach().clone() for k, v in self.drs.state_dict().items()}))

    def select(self) -> list[dict]:
        """Score every DRS snapshot (step 0: the pretrained domain model) on the valid top-K
        rows with h from the final LLM, keep the best by NDCG@20 (ties: the earliest), so the
        DRS kept is never below the pretrained model on valid."""
        if self.selection is None or not self.snapshots:
            return []
        sel = self.selection
        h = self.features(sel.prefixes, sel.candidates)
        users = torch.tensor(sel.users, dtype=torch.long)
        results, best = [], None
        for step, state in self.snapshots:
            self.drs.load_state_dict(state)
            self.drs.eval()
            with torch.no_grad():
                scores = np.stack([self.drs.logits(hr, users[r].expand(len(c)), torch.tensor(c)).numpy()
                                   for r, (hr, c) in enumerate(zip(h, sel.candidates))])
            m = metrics.candidate_metrics(scores.astype(np.float64), sel.label_index, ks=(1, 20))
            results.append({"step": step, "valid_NDCG@20": m["NDCG@20"], "valid_HR@1": m["HR@1"]})
            if best is None or m["NDCG@20"] > best[1]:
                best = (step, m["NDCG@20"], state)
        self.drs.load_state_dict(best[2])
        self.drs.eval()
        self.selected = {"step": best[0], "valid_NDCG@20": best[1], "candidates": results}
        log.info("[joint] DRS selected on valid: step %d (NDCG@20 %.4f; step 0 %.4f)",
                 best[0], best[1], results[0]["valid_NDCG@20"])
        return results

    # -- checkpoints
    def _state(self) -> dict:
        """Everything but the LLM, its optimizer and schedule (accelerate's save_state has those)."""
        return {"drs": self.drs.state_dict(), "drs_opt": self.drs_opt.state_dict(),
                "sharing": self.m.state_dict() if self.m is not None else {}, "snapshots": self.snapshots,
                "pool_h": self.pool_h, "initial": self.initial,
                "rng": torch.get_rng_state(), "step": self.step, "history": self.history,
                "params_hash": self.hash}

    def checkpointer(self, folder: Path) -> Checkpointer:
        """The shared checkpoint protocol on `folder`, under this run's params hash."""
        return Checkpointer(folder, self.hash, is_main=self.acc.is_main_process, barrier=self.acc.wait_for_everyone)

    def save(self, folder: Path) -> None:
        """The whole training state as checkpoint `self.step` in `folder` (pipeline/checkpoint.py:
        `latest` moves only once it is complete): the LLM, its optimizer and schedule through
        accelerate's save_state (every process: ZeRO-3 shards are saved by their owners), the
        rest (`_state`) in state.pt."""
        def write(path: Path) -> None:
            self.acc.save_state(str(path / "llm"))
            if self.acc.is_main_process:
                torch.save(self._state(), path / "state.pt")

        self.checkpointer(folder).save(self.step, write)

    def resume(self, folder: Path | None) -> bool:
        """Restore the latest checkpoint in `folder`, if any; one written under other params
        (another hash) is refused with a PipelineError, nothing overwritten."""
        if folder is None:
            return False

        def read(path: Path) -> None:
            self.acc.load_state(str(path / "llm"))
            s = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
            self.drs.load_state_dict(s["drs"])
            self.drs_opt.load_state_dict(s["drs_opt"])
            if self.m is not None:
                self.m.load_state_dict(s["sharing"])
            self.snapshots, self.pool_h, self.initial = s["snapshots"], s["pool_h"], s["initial"]
            torch.set_rng_state(s["rng"])
            self.step, self.history = s["step"], s["history"]

        return self.checkpointer(folder).load(read) is not None

    def llm_state_dict(self) -> dict:
        """The LLM's full weights (gathered from every process under ZeRO-3: call it on all)."""
        return self.acc.get_state_dict(self.engine)

    def run(self, checkpoints: Path | None = None, stop_after: int | None = None) -> list[dict]:
        """Train to cfg.steps (or `stop_after` steps, writing a checkpoint: tests simulate a kill),
        then select the DRS on valid."""
        if self.resume(checkpoints):
            log.info("[joint] resuming at step %d from %s", self.step, checkpoints)
        while self.step < self.cfg.steps:
            step = self.step
            if step % self.cfg.refresh_every == 0 and "drs" in self.sides:
                self.snapshot()  # the DRS as it is before this LLM snapshot's steps (step 0: pretrained)
                self.refresh()
            rec: dict = {"step": step + 1}
            whole = batch_indices(len(self.data.llm_enc.input_ids), self._batches, step, 0)
            if "llm" in self.sides:
                out, whole = self.llm_step(step)
                rec.update(out)
            if "drs" in self.sides:
                rec.update(self.drs_steps(step, whole))
            self.step = done = step + 1
            if done % self.cfg.refresh_every == 0 or done == self.cfg.steps:
                rec.update(self.drift())
            self.history.append(rec)
            if self.acc.is_main_process and (step % 5 == 0 or done == self.cfg.steps):
                log.info("[joint] step %d/%d %s", done, self.cfg.steps,
                         " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k != "step"))
            stop = stop_after is not None and done >= stop_after
            if checkpoints is not None and done < self.cfg.steps and (done % self.cfg.checkpoint_every == 0 or stop):
                self.save(checkpoints)
            if stop:
                break
        if self.step >= self.cfg.steps and "drs" in self.sides:
            self.snapshot()  # the final DRS
            self.select()
        self.model.eval()
        self.drs.eval()
        return self.history


def _finite(loss: torch.Tensor, side: str, step: int, task: torch.Tensor, ml: torch.Tensor) -> None:
    """A non-finite loss stops joint training before it reaches the weights (nothing is saved)."""
    if not torch.isfinite(loss):
        raise PipelineError(f"joint training: the {side} loss is {loss.item()} at step {step + 1} "
                            f"(task loss {task.item()}, mutual-learning loss {ml.item()}); stopped before the "
                            "update, nothing written: lower the lr or lambda, or check the inputs")
