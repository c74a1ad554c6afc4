"""The two forward passes every LLM path shares (SFT, scoring, BDLM joint training).

Both compute the vocabulary logits only where they are read. Only the answer tokens carry a
loss and only the first answer token is scored, while a decoder-only model's LM head over
every prompt position costs about a fifth of its forward FLOPs at SmolLM2's size (576 x 51k
per position), plus a [batch, length, vocab] float tensor. transformers' `logits_to_keep`
(a position tensor, or a boolean mask) skips the rest; models whose forward lacks it (older
architectures) fall back to full logits with the same result.
"""
from __future__ import annotations

import inspect
from functools import lru_cache

import torch

from pipeline.llm.encoding import IGNORE, pad


def _unwrap(model):
    """The transformers model inside DDP/DeepSpeed (`.module`) and peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


@lru_cache(maxsize=16)
def _has_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def keeps_logits(model) -> bool:
    """Whether `model`'s forward accepts logits_to_keep (decoder-only models only: seq2seq
    decoders here are as short as the answer)."""
    inner = _unwrap(model)
    return not inner.config.is_encoder_decoder and _has_logits_to_keep(type(inner))


def _answer_pass(model, batch: dict[str, torch.Tensor], states: bool):
    """The answer tokens' log p (as `answer_logprobs`) and, with `states`, the final hidden
    state [B, hidden] at each row's answer position (the one predicting its first answer
    token: what the LM head reads there; seq2seq: the decoder's first position)."""
    labels = batch["labels"]
    extra = {"output_hidden_states": True} if states else {}
    state = None
    if _unwrap(model).config.is_encoder_decoder:
        target = labels  # the model shifts them into decoder inputs
        out = model(**batch, **extra)
        at = target != IGNORE
        logits = out.logits[at]
        if states:
            state = out.decoder_hidden_states[-1][:, 0]
    else:
        # no KV cache: nothing continues from this pass (building it costs a copy per layer)
        inputs = {k: v for k, v in batch.items() if k != "labels"} | {"use_cache": False}
        target = labels[:, 1:]  # logits at position t predict token t + 1
        at = target != IGNORE
        if keeps_logits(model):
            mask = torch.zeros_like(labels, dtype=torch.bool)
            mask[:, :-1] = at
            out = model(**inputs, logits_to_keep=mask, **extra)
            logits = out.logits  # [N, vocab]
        else:
            out = model(**inputs, **extra)
            logits = out.logits[:, :-1][at]
        if states:
            first = at.int().argmax(1)  # every row has an answer (its eos at least)
            state = out.hidden_states[-1][torch.arange(len(first), device=first.device), first]
    tokens = target[at]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    rows = at.nonzero()[:, 0]
    last = torch.ones_like(rows, dtype=torch.bool)
    last[:-1] = rows[1:] != rows[:-1]
    return logp, rows, last, state


def answer_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p of every answer token (labels != IGNORE) given what precedes it, as flat float32
    tensors in row-major order: (log p [N], its row in the batch [N], whether it is its row's
    last answer token (the eos) [N]). Decoder-only logits are computed at those positions only."""
    return _answer_pass(model, batch, states=False)[:3]


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens, what the model's own `.loss` computes."""
    return -answer_logprobs(model, batch)[0].mean()


def answer_loss_and_state(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`answer_loss` and, from the same pass, the final hidden state [B, hidden] at each row's
    answer position (the alignment loss of sft reads it)."""
    logp, _, _, state = _answer_pass(model, batch, states=True)
    return -logp.mean(), state


def prompt_forward(model, batch: dict[str, torch.Tensor], pos: torch.Tensor, pooling: str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For prompt batches from encoding.prompt_batch: the logits [B, vocab] at `pos` (the
    position predicting the first answer token) and, with `pooling`, the LLM's top-layer
    feature h [B, hidden] (float32) that BDLM's DRS reads:
    `last`: decoder-only, the final hidden state at `pos`; seq2seq, the decoder's final hidden
    state at its start position (likewise the one predicting the first answer token).
    `mean`: the mean over the prompt tokens of the last (decoder-only) or encoder (seq2seq) layer."""
    rows = torch.arange(len(pos), device=pos.device)
    seq2seq = bool(_unwrap(model).config.is_encoder_decoder)
    extra = {"output_hidden_states": True} if pooling else {}
    if not seq2seq:
        extra["use_cache"] = False  # one pass, nothing continues from it
    if keeps_logits(model):
        out = model(**batch, logits_to_keep=pos[:, None], **extra)
        logits = out.logits[:, 0]
    else:
        out = model(**batch, **extra)
        logits = out.logits[rows, pos]
    if not pooling:
        return logits, None
    if pooling == "last":
        hs = out.decoder_hidden_states[-1] if seq2seq else out.hidden_states[-1]
        return logits, hs[rows, pos].float()
    if pooling != "mean":
        raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
    hs = out.encoder_last_hidden_state if seq2seq else out.hidden_states[-1]
    mask = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)
    return logits, ((hs * mask).sum(1) / mask.sum(1).clamp(min=1)).float()


def shared_prompt_logprobs(model, prompt: list[int], answers: list[list[int]], pad_id: int) -> torch.Tensor:
    """Several answers to one prompt, the prompt read once: [len(answers)] sums of log p of
    each answer's tokens but its last (the eos), as answer_logprobs gives them from the
    concatenated rows. Decoder-only models continue the prompt's KV cache (repeated per
    answer); seq2seq models reuse its encoder states. Scoring 20 text-id candidates this way
    costs one prompt pass instead of twenty."""
    device = model.get_input_embeddings().weight.device
    c = len(answers)
    ids = pad(answers, pad_id).to(device)                           # [C, A]
    real = pad([[1] * len(a) for a in answers], 0).to(device).bool()
    src = torch.tensor([prompt], device=device)
    ones = torch.ones_like(src)
    if _unwrap(model).config.is_encoder_decoder:
        states = model.get_encoder()(input_ids=src, attention_mask=ones).last_hidden_state
        logits = model(encoder_outputs=(states.expand(c, -1, -1),), attention_mask=ones.expand(c, -1),
                       labels=ids.masked_fill(~real, IGNORE)).logits  # [C, A, vocab]; position j predicts token j
        logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    else:
        out = model(input_ids=src, attention_mask=ones, use_cache=True,
                    **({"logits_to_keep": 1} if keeps_logits(model) else {}))
        first = torch.log_softmax(out.logits[0, -1].float(), -1)[ids[:, 0]]  # the prompt's last position predicts token 0
        cache = out.past_key_values
        cache.batch_repeat_interleave(c)
        mask = torch.cat([ones.expand(c, -1), real[:, :-1].long()], 1)
        rest = model(input_ids=ids[:, :-1], attention_mask=mask, past_key_values=cache).logits  # predicts tokens 1..
        logp = torch.cat([first[:, None],
                          torch.log_softmax(rest.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)], 1)
    lengths = real.sum(1)
    keep = real & (torch.arange(ids.shape[1], device=device)[None] < (lengths - 1)[:, None])  # eos excluded
    return torch.where(keep, logp, 0.0).sum(1)
