"""Supervised fine-tuning of an LLM on prompt/answer pairs (loss on answer tokens only).

One loop for decoder-only and encoder-decoder models, on a CPU or on GPUs through
`accelerate launch` (bf16, DeepSpeed ZeRO-3 with configs/accelerate_zero3.yaml). Full
fine-tuning by default (the papers'); LoRA through peft as an option, with the user/item
token rows trained in full (peft's trainable_token_indices) at their own learning rate
`row_lr` (an AdamW parameter group of their own; the adapters train at `lr`).

Checkpoints (model, optimizer, scheduler, RNG and the loss log) are written every
`checkpoint_every` steps through pipeline/checkpoint.py to a folder keyed by the run's inputs;
a run started again with the same inputs resumes from the last one and ends with the same
weights as an uninterrupted run, because the batch order is a pure function of (seed, step).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from accelerate import Accelerator, DistributedType
from transformers import get_cosine_schedule_with_warmup

from pipeline.checkpoint import Checkpointer
from pipeline.errors import PipelineError
from pipeline.llm.encoding import Encoded, collate, encode
from pipeline.llm.forward import answer_loss, answer_loss_and_state
from pipeline.precision import resolve
from pipeline.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 60
    batch_size: int = 8  # per process and micro-step
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_len: int = 320
    seed: int = 2024
    checkpoint_every: int = 20
    lora: bool = False
    lora_r: int = 16
    bucket: int = 1  # batches per length-sorting window of the epoch permutation (1: no bucketing)
    row_lr: float = 2e-3  # the <uid>/<iid> rows under LoRA (peft's trainable tokens): their own AdamW group
    mixed_precision: str = "no"  # "no", "bf16" or "auto" (pipeline.precision)
    curve_every: int = 0  # steps between points of the valid learning curve (0: none)
    align_weight: float = 0.0  # weight of the answer-state / user-row alignment loss (0: off, the papers')

    # set per variant (llm.variant.<name>.align), not in params.yaml's sft section
    VARIANT_FIELDS = ("align_weight",)

    def section(self) -> dict:
        """The fields as params.yaml's sft section holds them."""
        return {k: v for k, v in self.__dict__.items() if k not in self.VARIANT_FIELDS}


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


@lru_cache(maxsize=4)
def _bucketed_order(seed: int, epoch: int, batch_size: int, bucket: int, lengths: bytes) -> np.ndarray:
    """The epoch's permutation with each window of `bucket` x `batch_size` consecutive rows
    sorted by length (stable: equal lengths keep their shuffled order), then the window's
    batches put in a seeded order: batches of similar length, whose padding is small, with
    no short-to-long drift inside an epoch. A pure function of its arguments."""
    lens = np.frombuffer(lengths, dtype=np.int64)
    order = _epoch_order(seed, epoch, len(lens))
    out = np.empty_like(order)
    width = bucket * batch_size
    for w, s in enumerate(range(0, len(order), width)):
        chunk = order[s:s + width]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        starts = np.arange(0, len(chunk), batch_size)
        shuffled = np.random.default_rng([seed, epoch, w]).permutation(len(starts))
        out[s:s + len(chunk)] = np.concatenate([chunk[starts[b]:starts[b] + batch_size] for b in shuffled])
    return out


def batch_indices(n: int, cfg: SFTConfig, step: int, micro: int, rank: int = 0, world: int = 1,
                  lengths: np.ndarray | list[int] | None = None) -> list[int]:
    """Rows of micro-batch `micro` of optimizer step `step` on process `rank`: epochs are
    seeded permutations, so any step's batch is known without replaying the ones before.
    With the rows' `lengths` and `cfg.bucket` > 1, each window of `bucket` batches of the
    permutation is regrouped by length (`_bucketed_order`): still a pure function of
    (seed, step), each row still once per epoch."""
    per_step = cfg.batch_size * cfg.grad_accum * world
    start = step * per_step + (micro * world + rank) * cfg.batch_size
    key = None
    if lengths is not None and cfg.bucket > 1:
        if len(lengths) != n:
            raise ValueError(f"batch_indices: {len(lengths)} lengths for {n} rows")
        key = np.asarray(lengths, dtype=np.int64).tobytes()
    out = []
    for pos in range(start, start + cfg.batch_size):
        epoch, i = divmod(pos, n)
        order = (_epoch_order(cfg.seed, epoch, n) if key is None
                 else _bucketed_order(cfg.seed, epoch, cfg.batch_size, cfg.bucket, key))
        out.append(int(order[i]))
    return out


AUX_TASKS = ("mim", "bpr", "mlm")


def training_pairs(table: pa.Table, weights: dict[str, float], aux: bool, seed: int) -> tuple[list[str], list[str]]:
    """The (prompt, answer) pairs one SFT run trains on: each task's rows kept at its weight
    (a seeded subset below 1, repeats above), auxiliary tasks only when `aux`."""
    rng = np.random.default_rng(seed)
    tasks = np.asarray(table["task"].to_pylist(), dtype=object)
    prompts, answers = table["prompt"].to_pylist(), table["answer"].to_pylist()
    keep: list[int] = []
    for task in sorted(set(tasks)):
        if (task in AUX_TASKS and not aux) or weights.get(task, 0.0) <= 0:
            continue
        rows = np.flatnonzero(tasks == task)
        whole, frac = divmod(weights[task], 1.0)
        keep += np.tile(rows, int(whole)).tolist()
        keep += rng.choice(rows, int(round(frac * len(rows))), replace=False).tolist()
    keep.sort()
    return [prompts[i] for i in keep], [answers[i] for i in keep]


def adamw(params, lr: float, weight_decay: float, deepspeed: bool = False) -> torch.optim.AdamW:
    """AdamW, fused where torch has it: on a CPU its fused step is ~7x faster than the default
    loop (0.08 s vs 0.57 s for SmolLM2-135M here), a tenth of an SFT step. DeepSpeed gets
    the plain one (it manages the optimizer's partitions itself)."""
    params = list(params)
    tensors = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    fused = not deepspeed and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def accelerator(mixed_precision: str, param: str, batch_size: int, grad_accum: int = 1) -> Accelerator:
    """The Accelerator of every LLM training loop here (sft, BDLM's joint training), in the
    precision the `param` setting resolves to on this machine (`acc.mixed_precision`). Under
    DeepSpeed it is told the micro-batch size: we batch by hand, with no DataLoader to read it
    from. The schedule counts optimizer steps, so the loops step it themselves, once per step
    (accelerate's default would step it once per process)."""
    precision = resolve(mixed_precision, "cuda" if torch.cuda.is_available() else "cpu", param)
    acc = Accelerator(mixed_precision=precision, gradient_accumulation_steps=grad_accum,
                      step_scheduler_with_optimizer=False)
    if acc.distributed_type == DistributedType.DEEPSPEED:
        acc.state.deepspeed_plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=batch_size, train_batch_size=batch_size * grad_accum * acc.num_processes)
    return acc


ROW_PARAMS = "trainable_tokens_delta"  # peft's name for the trained rows of trainable_token_indices


def param_groups(model, lr: float, row_lr: float | None = None) -> list[dict]:
    """AdamW parameter groups over the trainable parameters: the user/item token rows that
    peft trains apart from the embedding matrix (`ROW_PARAMS`) at `row_lr`, everything else
    at `lr`. Without `row_lr`, or with no such rows, one group at `lr`. The warmup + cosine
    schedule scales every group's rate by the same factor."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows = [p for n, p in named if ROW_PARAMS in n] if row_lr is not None else []
    rest = [p for n, p in named if not (row_lr is not None and ROW_PARAMS in n)]
    groups = [{"params": rest, "lr": lr, "name": "model"}]
    if rows:
        groups.append({"params": rows, "lr": row_lr, "name": "rows"})
    return groups


def prepare_optimization(acc: Accelerator, model, lr: float, weight_decay: float, warmup_steps: int, steps: int,
                         *, row_lr: float | None = None):
    """(model, AdamW, cosine schedule with warmup) over the trainable parameters, prepared by
    `acc` (under DeepSpeed ZeRO-3 the model comes back as its engine). With `row_lr`, peft's
    trained user/item rows are a parameter group of their own at that rate (`param_groups`)."""
    params = param_groups(model, lr, row_lr)
    opt = adamw(params, lr, weight_decay, deepspeed=acc.distributed_type == DistributedType.DEEPSPEED)
    sched = get_cosine_schedule_with_warmup(opt, warmup_steps, steps)
    return acc.prepare(model, opt, sched)


def _lora(model, cfg: SFTConfig, new_token_ids: list[int]):
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    extra = {"trainable_token_indices": new_token_ids} if new_token_ids else {}
    return get_peft_model(model, LoraConfig(task_type=task, r=cfg.lora_r, lora_alpha=2 * cfg.lora_r,
                                            target_modules="all-linear", **extra))


def alignment_loss(model, batch: dict[str, torch.Tensor], state: torch.Tensor,
                   user_ids: torch.Tensor) -> torch.Tensor:
    """An option, not the papers' method (docs: sft `align_weight`): 1 - cos(s_u, e_u) averaged
    over the batch's rows whose prompt names a user, where s_u is the final hidden state at
    the answer position and e_u the input-embedding row of the prompt's first user token
    (pre-loaded from the domain model; a fixed target here, so the row is not pulled towards
    the state). With a tied head, s_u = e_u would rank items as the domain model does (the
    head's item rows are its item embeddings), so the loss points the answer state at what
    pre-loading put in the vocabulary. Cosine, not distance: a ranking by s . e_i ignores the
    scale of s. Rows with no user token (MLM) add nothing; a batch with none gives 0."""
    ids = batch["input_ids"]
    is_user = torch.isin(ids, user_ids)
    has = is_user.any(1)
    if not bool(has.any()):
        return state.sum() * 0.0  # keeps the graph (every process runs the same backward)
    first = is_user.int().argmax(1)
    tokens = ids[torch.arange(len(ids), device=ids.device), first][has]
    with torch.no_grad():
        rows = model.get_input_embeddings()(tokens).float()
    return (1.0 - torch.nn.functional.cosine_similarity(state[has].float(), rows, dim=-1)).mean()


def run_identity(cfg: SFTConfig, prompts: list[str], answers: list[str]) -> str:
    """The identity of an SFT run's checkpoints when the caller gives none: a hash of the config
    and the training pairs (pipeline/checkpoint.py refuses to resume under another one)."""
    blob = json.dumps({"cfg": asdict(cfg), "prompts": prompts, "answers": answers}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def checkpointer(acc: Accelerator, folder: Path, identity: str) -> Checkpointer:
    """The shared checkpoint protocol on `folder` for a loop run by `acc`."""
    return Checkpointer(folder, identity, is_main=acc.is_main_process, barrier=acc.wait_for_everyone)


def train(model, tokenizer, prompts: list[str], answers: list[str], cfg: SFTConfig,
          checkpoints: Path | None = None, new_token_ids: list[int] | None = None,
          output_dir: Path | None = None, stop_after: int | None = None,
          evaluate: Callable[[object], dict] | None = None, user_token_ids: list[int] | None = None,
          identity: str | None = None):
    """Fine-tune `model` on (prompt, answer) pairs. Returns (trained model, loss log,
    encoding stats) and, with `output_dir`, saves model + tokenizer there (gathering the
    weights from every process under ZeRO-3). `stop_after` ends the run early after that
    many steps (tests use it to simulate an interruption). With `evaluate` and
    cfg.curve_every, the learning curve: `evaluate(model)` (a dict of metrics) before the
    first step and every curve_every steps and at the end, logged into the loss log's entry of
    that step with the number of training samples seen (`samples`). cfg.align_weight > 0 adds
    `alignment_loss` over the prompts that name one of `user_token_ids` (logged as `align`).
    Checkpoints in `checkpoints` (pipeline/checkpoint.py) carry `identity` (default: a hash of
    cfg and the pairs, `run_identity`); one written under another identity is refused."""
    if not prompts:
        raise PipelineError("no training samples: check prompts and the sft params")
    for key in ("lr", "row_lr"):
        value = getattr(cfg, key)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise PipelineError(f"params.yaml: sft.{key} must be > 0, got {value!r}")
    if cfg.lora and not cfg.lora_r >= 1:
        raise PipelineError(f"params.yaml: sft.lora_r must be >= 1, got {cfg.lora_r!r}")
    if not (isinstance(cfg.align_weight, (int, float)) and math.isfinite(cfg.align_weight) and cfg.align_weight >= 0):
        raise PipelineError(f"sft: align_weight must be a finite number >= 0, got {cfg.align_weight!r}")
    if cfg.align_weight > 0 and not user_token_ids:
        raise PipelineError("sft: align_weight > 0 needs user tokens (a pe or rand vocabulary); "
                            "with ids as text there is no user row to align with")
    seq2seq = bool(model.config.is_encoder_decoder)
    enc: Encoded = encode(tokenizer, prompts, answers, seq2seq, cfg.max_len)
    lengths = [len(r) for r in enc.input_ids]
    torch.manual_seed(cfg.seed)
    acc = accelerator(cfg.mixed_precision, "sft.mixed_precision", cfg.batch_size, cfg.grad_accum)
    if cfg.lora:
        model = _lora(model, cfg, new_token_ids or [])
    model, opt, sched = prepare_optimization(acc, model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.steps,
                                             row_lr=cfg.row_lr if cfg.lora else None)
    ckpt = None
    if checkpoints is not None:
        ckpt = checkpointer(acc, checkpoints, identity or run_identity(cfg, prompts, answers))
    resumed = ckpt.load(lambda path: acc.load_state(str(path))) if ckpt is not None else None
    start, history = (resumed.step, resumed.meta["history"]) if resumed is not None else (0, [])
    if resumed is not None:
        log.info("[sft] resuming at step %d from %s", start, resumed.path)
    per_step = cfg.batch_size * cfg.grad_accum * acc.num_processes
    align = cfg.align_weight > 0
    users = torch.tensor(user_token_ids or [], dtype=torch.long, device=acc.device)

    def curve_point(step: int) -> dict:
        if evaluate is None or not cfg.curve_every or (step % cfg.curve_every and step != cfg.steps):
            return {}
        inner = acc.unwrap_model(model)
        inner.eval()
        point = {"samples": step * per_step, **evaluate(inner)}
        inner.train()
        return point

    if start == 0 and (first := curve_point(0)):
        history.append({"step": 0, **first})
    model.train()
    bar = Progress("sft", total=cfg.steps, initial=start, disable=not acc.is_local_main_process)
    for step in range(start, cfg.steps):
        losses, aligns = [], []
        for micro in range(cfg.grad_accum):
            idx = batch_indices(len(enc.input_ids), cfg, step, micro, acc.process_index, acc.num_processes,
                                lengths=lengths)
            batch = {k: v.to(acc.device) for k, v in collate(enc, idx, tokenizer.pad_token_id, seq2seq).items()}
            with acc.accumulate(model):
                if align:
                    loss, state = answer_loss_and_state(model, batch)
                    extra = alignment_loss(acc.unwrap_model(model), batch, state, users)
                    aligns.append(extra.item())
                    acc.backward(loss + cfg.align_weight * extra)
                else:
                    loss = answer_loss(model, batch)
                    acc.backward(loss)
                opt.step()
                opt.zero_grad()
            losses.append(loss.item())
        check_finite(acc, losses + aligns, step, cfg)
        sched.step()
        done = step + 1
        rates = sched.get_last_lr()
        history.append({"step": done, "loss": float(np.mean(losses)), "lr": rates[0],
                        **({"align": float(np.mean(aligns))} if align else {}),
                        **({"row_lr": rates[1]} if len(rates) > 1 else {}), **curve_point(done)})
        bar.update(loss=f"{history[-1]['loss']:.3f}")
        stop = stop_after is not None and done >= stop_after
        if ckpt is not None and ((done % cfg.checkpoint_every == 0 and done < cfg.steps) or stop):
            ckpt.save(done, lambda path: acc.save_state(str(path)), {"history": history})
        if stop:
            break
    bar.close()
    wrapped, model = model, acc.unwrap_model(model)
    if cfg.lora:
        model = model.merge_and_unload()
    if output_dir is not None:
        state = None if cfg.lora else acc.get_state_dict(wrapped)  # gathers ZeRO-3 shards
        if acc.is_main_process:
            model.save_pretrained(output_dir, state_dict=state)
            tokenizer.save_pretrained(output_dir)
        acc.wait_for_everyone()
    model.eval()
    return model, history, {"samples": len(enc.input_ids), "truncated": enc.truncated,
                            "precision": acc.mixed_precision, "config": asdict(cfg)}


def nonfinite_processes(acc: Accelerator, losses: list[float]) -> list[bool]:
    """Per process, whether any of its `losses` is not finite: a collective (every process
    calls it and gets the same list), so all of them can stop together."""
    bad = torch.tensor([0.0 if np.isfinite(losses).all() else 1.0], device=acc.device)
    return [bool(f) for f in acc.gather(bad).flatten().tolist()]


def check_finite(acc: Accelerator, losses: list[float], step: int, cfg: SFTConfig) -> None:
    """Stop every process together when the loss of any one is not finite: every later step
    would train on NaN weights, so the run stops with nothing written. The verdict is
    collective (a gather of each process's flag): a process raising alone left the others
    waiting for it in the next collective (the gradient all-reduce, a checkpoint barrier)."""
    flags = nonfinite_processes(acc, losses)
    if any(flags):
        where = ", ".join(str(r) for r, f in enumerate(flags) if f)
        what = (f"not finite on process {where} of {len(flags)} (this is process {acc.process_index}: {losses})"
                if len(flags) > 1 else f"{losses}")
        raise PipelineError(f"sft: training loss is {what} at step {step + 1} of {cfg.steps} (lr {cfg.lr}); "
                            f"stopped{' on every process' if len(flags) > 1 else ''}, nothing was written. "
                            "Lower sft.lr or check the prompts")
