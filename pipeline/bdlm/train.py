"""Algorithm 1: the joint-training config, its data and the alternating loop with
checkpoints."""
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

from pipeline.bdlm.drs import DRS, llm_features
from pipeline.bdlm.sharing import LLMRows, Sharing, shared_tables
from pipeline.errors import PipelineError
from pipeline.llm.base import is_seq2seq
from pipeline.llm.encoding import collate, encode
from pipeline.llm.forward import answer_loss
from pipeline.llm.sft import SFTConfig, accelerator, batch_indices, prepare_optimization, training_pairs

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
    mixed_precision: str = "no"     # LLM forward passes: "no", "bf16" or "auto" (pipeline.llm.precision)

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


# ----------------------------------------------------------------------------- the loop


class JointTrainer:
    """Algorithm 1 on one LLM and one DRS, resumable (see module doc).

    The LLM goes through accelerate as in sft: one process, or `accelerate launch` with
    DeepSpeed ZeRO-3 (or DDP) over several GPUs. Every process then trains the LLM on its own
    share of the step's prompts, writes the rows of the whole step's users/items into M and
    takes the same DRS step on the same batch, so M and the DRS stay identical everywhere
    (the DRS is small; its LLM features come from the shared LLM weights)."""

    def __init__(self, model, tokenizer, drs: DRS, sharing: Sharing, llm_rows: LLMRows, data: JointData,
                 cfg: JointConfig, params_hash: str | None = None, sides: tuple[str, ...] = ("llm", "drs")):
        self.model, self.tok, self.drs, self.m, self.rows, self.data = model, tokenizer, drs, sharing, llm_rows, data
        self.cfg = cfg.check()
        self.hash = params_hash or cfg.params_hash()
        self.sides = sides
        self.seq2seq = is_seq2seq(model)
        self.tables = shared_tables(cfg.share)
        torch.manual_seed(cfg.seed)
        self.acc = accelerator(cfg.mixed_precision, "joint.train.mixed_precision", cfg.batch_size)
        self.precision = self.acc.mixed_precision
        # engine: what trains (the model itself on one process, its DeepSpeed/DDP wrapper otherwise);
        # self.model stays the transformers model, for features and rows
        self.engine, self.llm_opt, self.llm_sched = prepare_optimization(
            self.acc, model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.steps)
        self.device = self.acc.device
        self.drs_opt = torch.optim.Adam(drs.parameters(), lr=cfg.drs_lr)
        self._llm_batches = SFTConfig(batch_size=cfg.batch_size, grad_accum=1, seed=cfg.seed)
        self._drs_batches = SFTConfig(batch_size=cfg.drs_batch_size, grad_accum=1, seed=cfg.seed + 1)
        # h for a DRS batch: the current LLM's feature (tests may replace it to replay features)
        self.features: Callable[[list[str]], torch.Tensor] = lambda prompts: llm_features(
            self.model, self.tok, prompts, cfg.max_len, cfg.pooling, self.precision)
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
        world = self.acc.num_processes
        shares = [batch_indices(len(self.data.llm_enc.input_ids), self._llm_batches, step, 0, rank, world)
                  for rank in range(world)]
        idx, whole = shares[self.acc.process_index], sum(shares, [])
        ids = {"user": _ids(self.data.llm_users[idx]), "item": _ids(self.data.llm_items[idx])}
        batch = {k: v.to(self.device) for k, v in
                 collate(self.data.llm_enc, idx, self.tok.pad_token_id, self.seq2seq).items()}
        self.engine.train()
        task = answer_loss(self.engine, batch)
        if self.cfg.lam > 0:
            ml = self._ml(self.rows.rows, ids)
            loss = task + self.cfg.lam * ml
        else:  # lambda = 0: the LLM's update is exactly plain SFT's
            with torch.no_grad():
                ml = self._ml(self.rows.rows, ids)
            loss = task
        _finite(loss, "LLM", step, task, ml)
        self.acc.backward(loss)
        self.llm_opt.step()
        self.llm_opt.zero_grad()
        self.llm_sched.step()
        every = {"user": _ids(self.data.llm_users[whole]), "item": _ids(self.data.llm_items[whole])}
        with torch.no_grad():  # every process writes the rows of the whole step's users/items
            for name in self.tables:
                self.m.write(step, "llm", name, every[name], self.rows.rows(name, every[name]))
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
        _finite(loss, "DRS", step, task, ml)
        loss.backward()
        self.drs_opt.step()
        self.drs_opt.zero_grad()
        with torch.no_grad():
            for name in self.tables:
                self.m.write(step, "drs", name, ids[name], self.drs.shared_rows(name, ids[name]))
        return {"drs_loss": task.item(), "drs_ml": ml.item()}

    # -- checkpoints
    def _state(self) -> dict:
        """Everything but the LLM, its optimizer and schedule (accelerate's save_state has those)."""
        return {"drs": self.drs.state_dict(), "drs_opt": self.drs_opt.state_dict(), "sharing": self.m.state_dict(),
                "rng": torch.get_rng_state(), "step": self.step, "history": self.history,
                "params_hash": self.hash}

    def save(self, folder: Path) -> None:
        """The whole training state to folder/latest, swapped in only once complete."""
        main = self.acc.is_main_process
        tmp, final, old = folder / f".step-{self.step}.tmp", folder / "latest", folder / ".latest.old"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp / "llm"))  # every process: ZeRO-3 shards are saved by their owners
        self.acc.wait_for_everyone()  # all written before the folder is swapped in
        if main:
            torch.save(self._state(), tmp / "state.pt")
            (tmp / "progress.json").write_text(json.dumps({"step": self.step, "params_hash": self.hash}))
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def resume(self, folder: Path | None) -> bool:
        if folder is None or not (folder / "latest" / "progress.json").exists():
            return False
        latest = folder / "latest"
        recorded = json.loads((latest / "progress.json").read_text()).get("params_hash")
        if recorded != self.hash:
            raise PipelineError(f"{latest}: checkpoint was written with params hash {recorded}, this run has "
                                f"{self.hash}; refusing to resume into it (nothing overwritten): "
                                "delete the folder or restore the params")
        self.acc.load_state(str(latest / "llm"))
        s = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
        self.drs.load_state_dict(s["drs"])
        self.drs_opt.load_state_dict(s["drs_opt"])
        self.m.load_state_dict(s["sharing"])
        torch.set_rng_state(s["rng"])
        self.step, self.history = s["step"], s["history"]
        return True

    def llm_state_dict(self) -> dict:
        """The LLM's full weights (gathered from every process under ZeRO-3: call it on all)."""
        return self.acc.get_state_dict(self.engine)

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
            if self.acc.is_main_process and (step % 5 == 0 or done == self.cfg.steps):
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


def _finite(loss: torch.Tensor, side: str, step: int, task: torch.Tensor, ml: torch.Tensor) -> None:
    """A non-finite loss stops joint training before it reaches the weights (nothing is saved)."""
    if not torch.isfinite(loss):
        raise PipelineError(f"joint training: the {side} loss is {loss.item()} at step {step + 1} "
                            f"(task loss {task.item()}, mutual-learning loss {ml.item()}); stopped before the "
                            "update, nothing written: lower the lr or lambda, or check the inputs")
