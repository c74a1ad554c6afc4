"""Prompt/answer pairs -> token ids, one convention for training, scoring and joint training.

Prompt and answer are tokenized separately and concatenated as ids, so the answer's first
token is the same at training and at scoring time: `Yes`, `No`, a rating digit, or a single
`<iid_k>` token (a leading space would make every item answer start with the same space
token). Decoder-only models read prompt + answer + eos with the loss on the answer only;
seq2seq models read the prompt in the encoder and produce answer + eos.

A prompt longer than `max_len` loses tokens from its middle (the history), never its head
(the user) or its tail (the candidates and the question); `Encoded.truncated` counts it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100
HEAD_TOKENS = 16  # prompt tokens always kept at the start: "User <uid_k> has watched ..."


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list[list[int]]
    prompt_lens: list[int]  # decoder: position after the prompt; seq2seq: encoder length
    truncated: int


def _cut(ids: list[int], budget: int) -> tuple[list[int], bool]:
    if len(ids) <= budget:
        return ids, False
    head = min(HEAD_TOKENS, budget // 4)
    return ids[:head] + ids[len(ids) - (budget - head):], True


def encode(tokenizer, prompts: list[str], answers: list[str], seq2seq: bool, max_len: int) -> Encoded:
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"] if answers else [[] for _ in p_ids]
    eos = tokenizer.eos_token_id
    out = Encoded([], [], [], 0)
    for p, a in zip(p_ids, a_ids):
        a = a + [eos]
        if seq2seq:
            p, cut = _cut(p + [eos], max_len)
            out.input_ids.append(p)
            out.labels.append(a)
        else:
            p, cut = _cut(p, max_len - len(a))
            out.input_ids.append(p + a)
            out.labels.append([IGNORE] * len(p) + a)
        out.prompt_lens.append(len(p))
        out.truncated += cut
    return out


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-padded [len(rows), longest] tensor."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate(enc: Encoded, idx: list[int], pad_id: int, seq2seq: bool) -> dict[str, torch.Tensor]:
    """A training batch (rows `idx` of `enc`) as model keyword arguments."""
    ids = [enc.input_ids[i] for i in idx]
    labels = [enc.labels[i] for i in idx]
    input_ids = pad(ids, pad_id)
    batch = {"input_ids": input_ids, "attention_mask": pad([[1] * len(r) for r in ids], 0)}
    batch["labels"] = pad(labels, IGNORE)
    return batch


def prompt_batch(tokenizer, prompts: list[str], max_len: int, decoder_start: int | None = None
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """Prompts alone, for scoring the first answer token: (model kwargs, index of the
    position whose logits predict it, number truncated). `decoder_start` is the seq2seq
    model's decoder start id (None for decoder-only models)."""
    seq2seq = decoder_start is not None
    # the same prompt budget as training with a one-token answer (+ eos)
    enc = encode(tokenizer, prompts, [], seq2seq, max_len if seq2seq else max_len - 1)
    ids = [r[:n] for r, n in zip(enc.input_ids, enc.prompt_lens)]
    batch = {"input_ids": pad(ids, tokenizer.pad_token_id), "attention_mask": pad([[1] * len(r) for r in ids], 0)}
    if seq2seq:
        start = torch.full((len(ids), 1), decoder_start, dtype=torch.long)
        batch["decoder_input_ids"] = start
        pos = torch.zeros(len(ids), dtype=torch.long)
    else:
        pos = torch.tensor([len(r) - 1 for r in ids], dtype=torch.long)
    return batch, pos, enc.truncated

