"""Vocabulary expansion (docs/design.md eq. 1-2 and ablations w/o PE, w/o ET).

`expand_vocab` adds one token per user (`<uid_k>`) and per item (`<iid_k>`) to a base LLM
and initialises their rows:

- ``pe``: pre-loaded from a domain model's tables. Copied when the domain dim d equals the
  hidden size h; otherwise mapped through a fixed seeded projection P (d x h) with
  orthonormal rows (d < h: inner products, hence cosines, are preserved exactly) or
  orthonormal columns (d > h), then scaled by one factor so the new rows' mean norm equals
  the mean norm of the existing vocabulary rows (one factor for users and items together,
  so user-item dot products keep their order). An untied output head gets the same rows
  scaled to its own mean norm.
- ``rand``: the same tokens, rows drawn from N(mean, std) of the vocabulary per dimension.
- ``text``: no new tokens; ids are written as plain text in prompts.

The token ids are contiguous: `<uid_k>` is first_user_token_id + k, `<iid_k>` is
first_item_token_id + k (checked here, recorded in the returned info).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from pipeline.errors import PipelineError
from pipeline.llm.base import is_seq2seq
from pipeline.llm.tokens import new_tokens

MODES = ("pe", "rand", "text")
SAMPLE_TEXT = "Given the user's history: Toy Story (1995), GoldenEye (1995). Answer Yes or No. user 12, item 7"
CONTEXT = ("history: ", " next")


def _check_tables(tables: Mapping[str, torch.Tensor], n_users: int, n_items: int, source: str) -> int:
    for key, n in (("user", n_users), ("item", n_items)):
        if key not in tables:
            raise PipelineError(f"{source}: no '{key}' table (keys: {sorted(tables)})")
        t = tables[key]
        if t.ndim != 2:
            raise PipelineError(f"{source}: '{key}' table must be 2-D, got shape {tuple(t.shape)}")
        if t.shape[0] != n:
            raise PipelineError(f"{source}: '{key}' table has {t.shape[0]} rows but the dataset has "
                                f"{n} {key}s: the embeddings come from another k-core or dataset")
        # one NaN row makes the mean-norm rescale NaN, and with it every new <uid>/<iid> row
        finite = torch.isfinite(t).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            col = int((~torch.isfinite(t[row])).nonzero()[0, 0])
            raise PipelineError(f"{source}: '{key}' table row {row} (<{key[0]}id_{row}>) has a non-finite value "
                                f"{float(t[row, col])} at column {col} ({int((~finite).sum())} bad row(s) in all); "
                                "re-run the domain model that exported it")
    if tables["user"].shape[1] != tables["item"].shape[1]:
        raise PipelineError(f"{source}: user dim {tables['user'].shape[1]} != item dim {tables['item'].shape[1]}")
    return int(tables["user"].shape[1])


def orthonormal_projection(d: int, h: int, seed: int) -> torch.Tensor:
    """A fixed seeded d x h matrix with orthonormal rows (d <= h) or columns (d > h)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(max(d, h), min(d, h), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # unique Q: the result depends only on the seed
    return (q.T if d <= h else q).float()  # [d, h]


def _add_tokens(tokenizer, tokens: list[str]) -> list[int]:
    from tokenizers import AddedToken

    present = [t for t in tokens[:1] + tokens[-1:] if t in tokenizer.get_vocab()]
    if present:
        raise PipelineError(f"the base tokenizer already has {present[0]!r}: expand the base model "
                            "(data/llm/base), not an already expanded one")
    before = tokenizer(SAMPLE_TEXT, add_special_tokens=False)["input_ids"]
    added = tokenizer.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False,
                                             normalized=False, special=False) for t in tokens])
    if added != len(tokens):
        raise PipelineError(f"tokenizer added {added} of {len(tokens)} new tokens")
    if tokenizer(SAMPLE_TEXT, add_special_tokens=False)["input_ids"] != before:
        raise PipelineError("adding the user/item tokens changed how plain text tokenizes")
    return check_single_tokens(tokenizer, tokens)


def check_single_tokens(tokenizer, tokens: list[str]) -> list[int]:
    """Every token encodes to exactly one, contiguous id, alone and inside text; returns the ids."""
    ids = tokenizer.convert_tokens_to_ids(tokens)
    first = ids[0] if ids else 0
    alone = tokenizer(tokens, add_special_tokens=False)["input_ids"]
    left, right = CONTEXT
    ctx = tokenizer([f"{left}{t}{right}" for t in tokens], add_special_tokens=False)["input_ids"]
    new_ids = set(ids)
    for k, (t, i, a, c) in enumerate(zip(tokens, ids, alone, ctx)):
        if a != [i] or i != first + k:
            raise PipelineError(f"new token {t!r} does not encode to one id (got {a}, expected [{i}]"
                                f"{'' if i == first + k else f', ids not contiguous from {first}'})")
        others = [x for x in c if x in new_ids and x != i]
        if c.count(i) != 1 or others or len(c) < 3:
            raise PipelineError(f"new token {t!r} does not survive inside text: "
                                f"{left + t + right!r} -> {tokenizer.convert_ids_to_tokens(c)}")
    if tokens:  # decoding gives the token and its surrounding words back
        t = tokens[-1]
        text = tokenizer.decode(ctx[-1], clean_up_tokenization_spaces=False)
        if t not in text or left.split(":")[0] not in text or right.strip() not in text:
            raise PipelineError(f"new token {t!r}: {left + t + right!r} decodes to {text!r}")
    return ids


def _norm_stats(w: torch.Tensor) -> float:
    return float(w.norm(dim=1).mean())


def _pe_rows(domain: torch.Tensor, h: int, target_norm: float, proj: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    # docs/design.md eq. 2: E^llm = s * E^drs Q (Q = identity and s = 1 when d == h)
    if proj is None:  # d == h: copied as is
        return domain.clone(), {"domain_mean_norm": _norm_stats(domain), "scale": 1.0,
                                "new_rows_mean_norm": _norm_stats(domain), "target_mean_norm": target_norm}
    rows = domain.double() @ proj.double()
    scale = target_norm / max(_norm_stats(rows), 1e-12)
    rows = (rows * scale).float()
    return rows, {"domain_mean_norm": _norm_stats(domain), "projected_mean_norm": _norm_stats(domain.double() @ proj.double()),
                  "scale": scale, "new_rows_mean_norm": _norm_stats(rows), "target_mean_norm": target_norm}


def _rand_rows(vocab: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    mean, std = vocab.float().mean(0), vocab.float().std(0)
    rows = mean + std * torch.randn(n, vocab.shape[1], generator=g)
    return rows, {"target_mean_norm": _norm_stats(vocab.float()), "new_rows_mean_norm": _norm_stats(rows)}


def expand_vocab(model, tokenizer, n_users: int, n_items: int, mode: str,
                 tables: Mapping[str, torch.Tensor] | None = None, seed: int = 2024,
                 tables_source: str = "domain tables") -> dict[str, Any]:
    """Add `<uid_k>`/`<iid_k>` tokens to `model` and `tokenizer` in place (see module doc).

    `tables` ({"user": [n_users, d], "item": [n_items, d]}) is needed for mode "pe";
    `tables_source` names their file in error messages. Returns what was done (vocab.json).
    """
    if mode not in MODES:
        raise PipelineError(f"unknown vocab mode '{mode}': expected one of {list(MODES)}")
    emb = model.get_input_embeddings()
    h = int(emb.weight.shape[1])
    head = model.get_output_embeddings()
    tied = head is None or head.weight.data_ptr() == emb.weight.data_ptr()
    info: dict[str, Any] = {"mode": mode, "n_users": n_users, "n_items": n_items, "hidden_size": h,
                            "seq2seq": is_seq2seq(model), "tied_output_head": tied, "seed": seed,
                            "tokenizer_size_before": len(tokenizer),
                            "embedding_rows_before": int(emb.weight.shape[0])}
    d = None
    if mode == "pe":
        if tables is None:
            raise PipelineError("vocab mode 'pe' needs the domain model's user/item tables")
        d = _check_tables(tables, n_users, n_items, tables_source)
    info["domain_dim"] = d
    if mode == "text":
        info.update({"n_new_tokens": 0, "first_user_token_id": None, "first_item_token_id": None,
                     "projection": None, "tokenizer_size": len(tokenizer),
                     "embedding_rows": int(emb.weight.shape[0])})
        return info

    n_vocab = min(len(tokenizer), int(emb.weight.shape[0]))  # rows of real tokens (not padding rows)
    with torch.no_grad():
        vocab_in = emb.weight[:n_vocab].detach().float().clone()
        vocab_out = None if tied else head.weight[:n_vocab].detach().float().clone()
        head_bias = None if tied or getattr(head, "bias", None) is None else head.bias[:n_vocab].mean()
    tokens = new_tokens(n_users, n_items)
    ids = _add_tokens(tokenizer, tokens)
    model.resize_token_embeddings(max(len(tokenizer), int(emb.weight.shape[0])), mean_resizing=False)
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if head is not None and head.weight.shape[0] < len(tokenizer):
        raise PipelineError(f"output head has {head.weight.shape[0]} rows after resizing, "
                            f"tokenizer has {len(tokenizer)} tokens")
    first = ids[0]
    idx = torch.arange(first, first + len(tokens))

    if mode == "pe":
        domain = torch.cat([tables["user"], tables["item"]]).detach().float()
        proj = None if d == h else orthonormal_projection(d, h, seed)
        info["projection"] = "copy (d == h)" if proj is None else f"orthonormal {d}->{h}"
        rows_in, info["norms"] = _pe_rows(domain, h, _norm_stats(vocab_in), proj)
        if not tied:
            rows_out, info["head_norms"] = _pe_rows(domain, h, _norm_stats(vocab_out), proj)
    else:
        info["projection"] = None
        rows_in, info["norms"] = _rand_rows(vocab_in, len(tokens), seed)
        if not tied:
            rows_out, info["head_norms"] = _rand_rows(vocab_out, len(tokens), seed + 1)
    with torch.no_grad():
        emb.weight[idx] = rows_in.to(emb.weight.dtype)
        if not tied:
            head.weight[idx] = rows_out.to(head.weight.dtype)
            if head_bias is not None:
                head.bias[idx] = head_bias
    info.update({"n_new_tokens": len(tokens), "first_user_token_id": first,
                 "first_item_token_id": first + n_users, "tokenizer_size": len(tokenizer),
                 "embedding_rows": int(emb.weight.shape[0]),
                 "head_rows": None if head is None else int(head.weight.shape[0])})
    return info
