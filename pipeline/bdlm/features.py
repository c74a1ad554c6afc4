"""The LLM feature h of (user row, item) pair prompts, the shared part read once.

BDLM's DRS reads h of the (u, i) prompt of each pair it scores (docs/design.md eq. 4): for
top-K, one h per candidate. The pair prompt is a row's `pair_prefix` (its user and history,
~95% of the tokens) + the item's `pair_suffix` (build_prompts' items.parquet), so 20
candidates share one prefix. A decoder-only model reads each prefix once, with its KV cache
repeated for the prefix's suffixes, which are read in one batch: ~20x fewer tokens than 20
plain forwards. Prefixes are batched with right padding; the suffixes then continue at each
prefix's own length (explicit position ids, the padding masked), so every pair sees exactly
the tokens and positions of its plain forward (tests compare the two). Seq2seq models (their
encoder reads the whole prompt at once) take the plain path.

Pair prompts are tokenized as prefix ids + suffix ids (no special tokens), and a prompt over
`max_len` loses tokens from the middle of its prefix (its history), as
pipeline.llm.encoding does for every prompt.
"""
from __future__ import annotations

import torch

from pipeline.llm.base import is_seq2seq
from pipeline.llm.encoding import _cut, pad
from pipeline.llm.forward import keeps_logits, prompt_forward
from pipeline.precision import autocast


class PairPrompts:
    """Token ids of pair prompts: each item's suffix tokenized once."""

    def __init__(self, tokenizer, item_suffixes: list[str], max_len: int):
        self.tok, self.max_len = tokenizer, max_len
        self.suffix = tokenizer(list(item_suffixes), add_special_tokens=False)["input_ids"]
        # the budget prompt_batch gives a prompt scored for a one-token answer (+ eos)
        self.budget = max_len - 2

    def prefixes(self, texts: list[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def ids(self, prefix: list[int], item: int) -> list[int]:
        """The pair prompt's ids, cut as pair_features cuts them (the plain path of tests)."""
        s = self.suffix[item]
        return _cut(prefix, self.budget - len(s))[0] + s


@torch.no_grad()
def pair_features(model, pairs: PairPrompts, prefixes: list[list[int]], items: list[list[int]],
                  pooling: str = "last", precision: str = "no", chunk: int = 8) -> list[torch.Tensor]:
    """h [len(items[r]), hidden] (float32, CPU) for each prefix r and each of its items."""
    was_training = model.training
    model.eval()
    try:
        if is_seq2seq(model) or not keeps_logits(model):
            return _plain(model, pairs, prefixes, items, pooling, precision)
        out: list[torch.Tensor] = []
        for s in range(0, len(prefixes), chunk):
            out.extend(_cached(model, pairs, prefixes[s:s + chunk], items[s:s + chunk], pooling, precision))
        return out
    finally:
        model.train(was_training)


def _cached(model, pairs: PairPrompts, prefixes, items, pooling, precision) -> list[torch.Tensor]:
    device = model.get_input_embeddings().weight.device
    pad_id = pairs.tok.pad_token_id
    counts = [len(c) for c in items]
    longest = [max((len(pairs.suffix[i]) for i in c), default=0) for c in items]
    pre = [_cut(p, pairs.budget - n)[0] for p, n in zip(prefixes, longest)]
    p_ids = pad(pre, pad_id).to(device)
    p_mask = pad([[1] * len(p) for p in pre], 0).to(device)
    with autocast(precision, device):
        first = model(input_ids=p_ids, attention_mask=p_mask, use_cache=True, logits_to_keep=1,
                      output_hidden_states=pooling == "mean")
    cache = first.past_key_values
    owner = torch.repeat_interleave(torch.arange(len(pre)), torch.tensor(counts)).to(device)
    if not len(owner):
        return [torch.zeros(0, model.config.hidden_size) for _ in items]
    cache.batch_select_indices(owner)  # one copy of each prefix's cache per suffix
    suf = [pairs.suffix[i] for c in items for i in c]
    s_ids = pad(suf, pad_id).to(device)
    s_mask = pad([[1] * len(s) for s in suf], 0).to(device)
    lengths = torch.tensor([len(p) for p in pre], device=device)[owner]
    positions = lengths[:, None] + torch.arange(s_ids.shape[1], device=device)[None]
    with autocast(precision, device):
        second = model(input_ids=s_ids, attention_mask=torch.cat([p_mask[owner], s_mask], 1),
                       position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1,
                       output_hidden_states=True)
    s_states = second.hidden_states[-1].float()
    rows = torch.arange(len(suf), device=device)
    s_len = s_mask.sum(1)
    if pooling == "last":
        h = s_states[rows, s_len - 1]
    elif pooling == "mean":
        p_states = first.hidden_states[-1].float()
        p_sum = (p_states * p_mask[..., None]).sum(1)[owner]
        total = p_sum + (s_states * s_mask[..., None]).sum(1)
        h = total / (lengths + s_len)[:, None]
    else:
        raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
    return list(h.cpu().split(counts))


def _plain(model, pairs: PairPrompts, prefixes, items, pooling, precision) -> list[torch.Tensor]:
    """One forward per pair prompt (seq2seq models; and the reference the tests compare with)."""
    device = model.get_input_embeddings().weight.device
    rows = [pairs.ids(p, i) for p, c in zip(prefixes, items) for i in c]
    counts = [len(c) for c in items]
    if not rows:
        return [torch.zeros(0, model.config.hidden_size) for _ in items]
    seq2seq = is_seq2seq(model)
    out = []
    for s in range(0, len(rows), 16):
        ids = rows[s:s + 16]
        if seq2seq:
            ids = [r + [pairs.tok.eos_token_id] for r in ids]
        batch = {"input_ids": pad(ids, pairs.tok.pad_token_id).to(device),
                 "attention_mask": pad([[1] * len(r) for r in ids], 0).to(device)}
        if seq2seq:
            batch["decoder_input_ids"] = torch.full((len(ids), 1), model.config.decoder_start_token_id,
                                                    dtype=torch.long, device=device)
            pos = torch.zeros(len(ids), dtype=torch.long, device=device)
        else:
            pos = torch.tensor([len(r) - 1 for r in ids], device=device)
        with autocast(precision, device):
            out.append(prompt_forward(model, batch, pos, pooling)[1].cpu())
    return list(torch.cat(out).split(counts))
