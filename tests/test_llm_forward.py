"""pipeline/llm/forward.py: logits only where they are read give what the full forward gives."""
from __future__ import annotations

import pytest
import torch

from pipeline.llm import forward
from pipeline.llm.encoding import collate, encode, prompt_batch
from pipeline.llm.forward import answer_loss, keeps_logits, prompt_forward
from pipeline.llm.scoring import ScoreConfig, Scorer
from tests.llm_tiny import tiny_llama, tiny_t5, tiny_tokenizer

PROMPTS = ["The user watched Toy Story (1995) and GoldenEye.", "Which item?",
           "Given the user's history, will the user interact with the item? Answer Yes or No."]
ANSWERS = ["Yes", "Toy Story", "No"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _models(tok):
    return {"llama": tiny_llama(tok), "t5": tiny_t5(tok)}


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_answer_loss_equals_the_models_own_loss(tok, arch):
    model = _models(tok)[arch].eval()
    seq2seq = arch == "t5"
    enc = encode(tok, PROMPTS, ANSWERS, seq2seq, 64)
    batch = collate(enc, [0, 1, 2], tok.pad_token_id, seq2seq)
    assert keeps_logits(model) == (arch == "llama")
    ours, theirs = answer_loss(model, batch), model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)
    # and the gradient it gives is the model's own
    ours.backward()
    g_ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(**batch).loss.backward()
    for a, b in zip(g_ours, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "t5"])
@pytest.mark.parametrize("pooling", [None, "last", "mean"])
def test_prompt_forward_matches_full_logits_and_hidden_states(tok, arch, pooling):
    model = _models(tok)[arch].eval()
    start = model.config.decoder_start_token_id if arch == "t5" else None
    batch, pos, _ = prompt_batch(tok, PROMPTS, 64, start)
    with torch.no_grad():
        logits, h = prompt_forward(model, batch, pos, pooling)
        full = model(**batch, output_hidden_states=True)
    rows = torch.arange(len(pos))
    assert torch.allclose(logits, full.logits[rows, pos], atol=1e-5)
    if pooling is None:
        assert h is None
        return
    if pooling == "last":
        hs = full.decoder_hidden_states[-1] if arch == "t5" else full.hidden_states[-1]
        want = hs[rows, pos]
    else:
        hs = full.encoder_last_hidden_state if arch == "t5" else full.hidden_states[-1]
        m = batch["attention_mask"].unsqueeze(-1).float()
        want = (hs * m).sum(1) / m.sum(1)
    assert h.shape == (len(PROMPTS), model.config.hidden_size if arch == "llama" else model.config.d_model)
    assert torch.allclose(h, want, atol=1e-5)
    # right padding: a prompt's row does not depend on what it is batched with
    with torch.no_grad():
        alone, h_alone = prompt_forward(model, *prompt_batch(tok, PROMPTS[1:2], 64, start)[:2], pooling)
    assert torch.allclose(alone[0], logits[1], atol=1e-5) and torch.allclose(h_alone[0], h[1], atol=1e-5)


def test_models_without_logits_to_keep_fall_back(tok, monkeypatch):
    model = tiny_llama(tok).eval()
    enc = encode(tok, PROMPTS, ANSWERS, False, 64)
    batch = collate(enc, [0, 1, 2], tok.pad_token_id, False)
    pbatch, pos, _ = prompt_batch(tok, PROMPTS, 64)
    with torch.no_grad():
        sliced = answer_loss(model, batch), *prompt_forward(model, pbatch, pos, "last")
    monkeypatch.setattr(forward, "keeps_logits", lambda m: False)  # as for an architecture without it
    with torch.no_grad():
        full = answer_loss(model, batch), *prompt_forward(model, pbatch, pos, "last")
    for a, b in zip(sliced, full):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_scorer_sequence_sums_the_answer_text_logprobs(tok, arch):
    """Scorer.sequence (text-id top-K) = sum of log p over the answer tokens before the eos,
    computed here from the full logits of each concatenated row; the three answers sharing a
    prompt go through its KV cache / encoder states (shared_prompt_logprobs), the others in
    a batch."""
    model = _models(tok)[arch].eval()
    seq2seq = arch == "t5"
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[0]]
    answers = ["Yes", "Toy Story", "Four Rooms (1995)", "No", "item 42"]
    scorer = Scorer(model, tok, ScoreConfig(batch_size=2, max_len=64))
    got = scorer.sequence(prompts, answers)
    enc = encode(tok, prompts, answers, seq2seq, 64)
    batch = collate(enc, list(range(len(prompts))), tok.pad_token_id, seq2seq)
    with torch.no_grad():
        logits = model(**batch).logits
    labels = batch["labels"] if seq2seq else batch["labels"][:, 1:]
    logits = logits if seq2seq else logits[:, :-1]
    logp = torch.log_softmax(logits, -1)
    for r, answer in enumerate(answers):
        cols = (labels[r] != -100).nonzero()[:, 0][:-1]  # the answer's tokens, eos excluded
        assert len(cols) == len(tok(answer, add_special_tokens=False)["input_ids"])
        want = logp[r, cols, labels[r, cols]].sum()
        assert got[r] == pytest.approx(float(want), abs=1e-4), (r, answer)
