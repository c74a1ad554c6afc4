"""Score an LLM on every protocol through the shared metrics module (pipeline.eval.metrics).

One forward pass per prompt: the distribution of the first answer token decides
- interaction prediction: log p(Yes) - log p(No), threshold chosen on valid;
- top-K over the 1+19 candidates: log p(<iid_c>) of each candidate;
- retrieval: a softmax restricted to all item tokens (exact full-item ranking), the user's
  known items masked as for every model; ranking over 1+99: the same distribution read at
  the 100 candidates;
- rating: the expected value under the distribution over the digits 1..5.
With ids as plain text ("w/o ET") an item answer spans several tokens: top-K then scores
each candidate by the log-probability of its whole answer (20 sequences per prompt), and
retrieval and ranking are not computed (they would need generation over the item space).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from pipeline.eval import metrics
from pipeline.errors import PipelineError
from pipeline.llm.encoding import IGNORE, collate, encode, prompt_batch
from pipeline.llm.forward import answer_logprobs, prompt_forward, shared_prompt_logprobs
from pipeline.precision import autocast, resolve
from pipeline.llm.tokens import item_text, item_token
from pipeline.progress import progress

RATINGS = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 16
    max_len: int = 320
    mixed_precision: str = "no"  # "no", "bf16" or "auto" (pipeline.precision)


class Scorer:
    """Batched first-token and sequence log-probabilities for one model + tokenizer."""

    def __init__(self, model, tokenizer, cfg: ScoreConfig):
        self.model, self.tok, self.cfg = model.eval(), tokenizer, cfg
        self.seq2seq = bool(model.config.is_encoder_decoder)
        self.decoder_start = model.config.decoder_start_token_id if self.seq2seq else None
        self.truncated = 0
        self.device = model.get_input_embeddings().weight.device
        self.precision = resolve(cfg.mixed_precision, self.device, "evaluate_llm.mixed_precision")

    def token_id(self, text: str) -> int:
        """The first token of `text` as an answer (Yes, No, a digit)."""
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise PipelineError(f"tokenizer encodes answer {text!r} to nothing")
        return ids[0]

    def item_ids(self, n_items: int) -> torch.Tensor:
        ids = self.tok.convert_tokens_to_ids([item_token(k) for k in range(n_items)])
        unk = self.tok.unk_token_id
        bad = [k for k, i in enumerate(ids) if i is None or (unk is not None and i == unk)]
        if bad:
            raise PipelineError(f"tokenizer has no token {item_token(bad[0])} ({len(bad)} item tokens missing): "
                                "score a model from expand_vocab with tokens on, or use the text render")
        return torch.tensor(ids, dtype=torch.long)

    @torch.no_grad()
    def first_token(self, prompts: list[str], columns: torch.Tensor, desc: str = "") -> np.ndarray:
        """log p(first answer token = columns[j] | prompt i), normalised over the whole vocabulary."""
        out = np.zeros((len(prompts), len(columns)), dtype=np.float32)
        # batches of similar length: a batch is padded to its longest prompt, and prompts of one
        # task differ mostly in history length (a row's result does not depend on its batch)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for s in progress(range(0, len(prompts), self.cfg.batch_size), desc, disable=not desc):
            idx = order[s:s + self.cfg.batch_size]
            chunk = [prompts[i] for i in idx]
            batch, pos, cut = prompt_batch(self.tok, chunk, self.cfg.max_len, self.decoder_start)
            self.truncated += cut
            with autocast(self.precision, self.device):
                logits, _ = prompt_forward(self.model, batch, pos)
            out[idx] = torch.log_softmax(logits.float(), dim=-1)[:, columns].numpy()
        return out

    @torch.no_grad()
    def sequence(self, prompts: list[str], answers: list[str], desc: str = "") -> np.ndarray:
        """Sum of log p(answer tokens | prompt), the closing eos excluded. Answers that share
        a prompt (top-K's candidates) are scored from one pass over it; the rest in batches."""
        enc = encode(self.tok, prompts, answers, self.seq2seq, self.cfg.max_len)
        self.truncated += enc.truncated
        groups: dict[tuple[int, ...], list[int]] = {}
        for r, (ids, n) in enumerate(zip(enc.input_ids, enc.prompt_lens)):
            groups.setdefault(tuple(ids[:n]), []).append(r)  # the prompt as cut for this answer
        out = np.zeros(len(prompts))
        alone = [rows[0] for rows in groups.values() if len(rows) == 1]
        shared = [(prompt, rows) for prompt, rows in groups.items() if len(rows) > 1]
        for s in progress(range(0, len(alone), self.cfg.batch_size), desc, disable=not desc):
            idx = alone[s:s + self.cfg.batch_size]
            batch = collate(enc, idx, self.tok.pad_token_id, self.seq2seq)
            with autocast(self.precision, self.device):
                logp, rows, last = answer_logprobs(self.model, batch)
            # drop the eos each answer ends with: score the answer text alone
            out[idx] = torch.zeros(len(idx)).index_add_(0, rows, torch.where(last, 0.0, logp)).numpy()
        for prompt, rows in progress(shared, desc, disable=not desc):
            answer_ids = [[t for t in enc.labels[r] if t != IGNORE] for r in rows]  # answer + eos
            with autocast(self.precision, self.device):
                out[rows] = shared_prompt_logprobs(self.model, list(prompt), answer_ids,
                                                   self.tok.pad_token_id).cpu().numpy()
        return out


def _rows(t: pa.Table, task: str) -> pa.Table:
    import pyarrow.compute as pc

    return t.filter(pc.equal(t["task"], task))


def topk_scores(scorer: Scorer, t: pa.Table, n_items: int, tokens: bool, desc: str = "") -> np.ndarray:
    """[rows, candidates] scores of top-K rows: log p(<iid_c>) of each candidate's token, or
    with ids as plain text the log-probability of its whole answer."""
    cands = metrics.candidate_matrix(t)
    if tokens:
        lp = scorer.first_token(t["prompt"].to_pylist(), scorer.item_ids(n_items), desc=desc)
        return np.take_along_axis(lp, cands, axis=1)
    prompts = np.repeat(np.array(t["prompt"].to_pylist(), dtype=object), cands.shape[1]).tolist()
    answers = [item_text(int(c), False) for c in cands.ravel()]
    return scorer.sequence(prompts, answers, desc=f"{desc} (text ids)" if desc else "").reshape(cands.shape)


def topk_curve_metrics(scorer: Scorer, t: pa.Table, n_items: int, tokens: bool) -> dict:
    """Valid top-K HR@1 and NDCG@20 of `t` (the SFT learning curve's y values)."""
    m = metrics.candidate_metrics(topk_scores(scorer, t, n_items, tokens), t["label_index"].to_numpy(), ks=(1, 20))
    return {"valid_topk_HR@1": m["HR@1"], "valid_topk_NDCG@20": m["NDCG@20"]}


def evaluate_llm(scorer: Scorer, valid: pa.Table, test: pa.Table, n_items: int, known: sp.csr_matrix,
                 tokens: bool) -> tuple[pa.Table, dict]:
    """Per-user outcomes (pipeline.eval.metrics.Outcomes) of every protocol the prompt tables hold, on
    test (valid only fixes the binary threshold), and what the run reports besides them.
    `known` masks each user's train + valid items in retrieval, as for the domain models."""
    out = metrics.Outcomes()
    extra: dict = {}
    start = time.perf_counter()
    yes_no = torch.tensor([scorer.token_id("Yes"), scorer.token_id("No")])
    for name, t in (("valid", _rows(valid, "interaction")), ("test", _rows(test, "interaction"))):
        if len(t):
            lp = scorer.first_token(t["prompt"].to_pylist(), yes_no, desc=f"interaction/{name}")
            out.binary(name, t["uid"].to_numpy(), t["label"].to_numpy(), lp[:, 0] - lp[:, 1])

    t = _rows(test, "topk")
    if len(t):
        out.candidates("topk", t["uid"].to_numpy(), topk_scores(scorer, t, n_items, tokens, "topk"),
                       t["label_index"].to_numpy())

    retrieval, ranking = _rows(test, "retrieval"), _rows(test, "ranking")
    if tokens and (len(retrieval) or len(ranking)):
        item_ids = scorer.item_ids(n_items)
        prompts = sorted(set(retrieval["prompt"].to_pylist()) | set(ranking["prompt"].to_pylist()))
        dist = dict(zip(prompts, scorer.first_token(prompts, item_ids, desc="retrieval/ranking")))
        if len(retrieval):
            users = retrieval["uid"].to_numpy()
            by_user = {u: dist[p] for u, p in zip(users.tolist(), retrieval["prompt"].to_pylist())}
            masked, unmasked = metrics.retrieval_ranks(lambda us: np.stack([by_user[u] for u in us.tolist()]),
                                                       users, retrieval["iid"].to_numpy(), known)
            out.ranks("retrieval", users, masked)
            out.ranks("retrieval_unmasked", users, unmasked)
        if len(ranking):
            lp = np.stack([dist[p] for p in ranking["prompt"].to_pylist()])
            out.candidates("ranking", ranking["uid"].to_numpy(), np.take_along_axis(lp, metrics.candidate_matrix(ranking), axis=1),
                           ranking["label_index"].to_numpy())
    elif len(retrieval) or len(ranking):
        extra["not_computed"] = {"retrieval": "ids as plain text: needs generation over the item space",
                                 "ranking": "ids as plain text: needs generation over the item space"}

    t = _rows(test, "rating")
    if len(t):
        digits = torch.tensor([scorer.token_id(r) for r in RATINGS])
        p = np.exp(scorer.first_token(t["prompt"].to_pylist(), digits, desc="rating"))
        pred = (p / p.sum(1, keepdims=True)) @ np.arange(1, 6, dtype=np.float64)
        out.rating(t["uid"].to_numpy(), t["rating"].to_numpy(), pred)
    extra["prompts_truncated"] = scorer.truncated
    extra["precision"] = scorer.precision
    extra["eval_seconds"] = round(time.perf_counter() - start, 1)
    return out.table(), extra
