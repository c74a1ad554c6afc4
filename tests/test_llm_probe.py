"""benchmarks/llm_probe.py on a tiny pre-loaded model: states, probes and HR@1 are computed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.llm.tokens import item_token, user_token
from pipeline.llm.vocab import expand_vocab
from pipeline.llm.prompts.render import user_at_answer
from tests.llm_tiny import tiny_llama, tiny_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import llm_probe  # noqa: E402

U, I = 30, 25


@pytest.fixture(scope="module")
def preloaded():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    g = torch.Generator().manual_seed(0)
    tables = {"user": torch.randn(U, 16, generator=g), "item": torch.randn(I, 16, generator=g)}
    info = expand_vocab(model, tok, U, I, "pe", tables)
    return model.eval(), tok, info


def test_user_token_at_answer_matches_the_renderer():
    p = "User <uid_3> has watched the following movies <iid_1>. Predict the next movie he/she will watch. Answer:"
    assert llm_probe.with_user_at_answer(p, 3) == p[:-len("Answer:")] + user_at_answer("User <uid_3>")
    assert llm_probe.with_user_at_answer(p, 3).endswith("Answer for user <uid_3>:")
    with pytest.raises(ValueError):
        llm_probe.with_user_at_answer("no answer here", 3)


def test_probe_runs_on_a_tiny_model(preloaded):
    model, tok, info = preloaded
    rng = np.random.default_rng(0)
    fu, fi = info["first_user_token_id"], info["first_item_token_id"]
    uids = np.arange(U)
    pos = rng.integers(0, I, U)
    cands = np.stack([np.r_[p, rng.choice(np.setdiff1d(np.arange(I), [p]), 4, replace=False)] for p in pos])
    perm = np.argsort(rng.random(cands.shape), axis=1)
    cands = np.take_along_axis(cands, perm, axis=1)
    label = np.argmax(cands == pos[:, None], axis=1)
    prompts = [f"User {user_token(u)} watched {item_token(int(rng.integers(I)))}. Answer:" for u in uids]
    item_ids = torch.arange(fi, fi + I)
    states, logits = llm_probe.answer_states(model, tok, prompts, item_ids, batch_size=7)
    assert states.shape == (U, model.config.hidden_size) and logits.shape == (U, I)
    # the state is the one the answer is read from: logits at the item tokens = state . head rows
    head = model.get_output_embeddings().weight.detach().float().numpy()
    np.testing.assert_allclose(states @ head[fi:fi + I].T, logits, rtol=1e-4, atol=1e-4)
    # batching order does not change what each prompt gets
    s1, _ = llm_probe.answer_states(model, tok, prompts[:3], item_ids, batch_size=1)
    np.testing.assert_allclose(s1, states[:3], rtol=1e-4, atol=1e-5)
    emb = model.get_input_embeddings().weight.detach().float().numpy()
    res = llm_probe.probe(states, logits, uids, pos, cands, label, emb[fu:fu + U], emb[fi:fi + I],
                          head[fi:fi + I], holdout=0.3, seed=1)
    assert res["users_heldout"] == 9 and res["users_fit"] == 21
    for name in ("user_row", "item_target"):
        assert np.isfinite(res[name]["r2"]) and -1 <= res[name]["cosine"] <= 1
    assert res["hr1"]["chance"] == pytest.approx(0.2)
    for v in res["hr1"].values():
        assert 0.0 <= v <= 1.0
    # a state that *is* the user row is recovered perfectly
    ideal = llm_probe.probe(emb[fu:fu + U], logits, uids, pos, cands, label, emb[fu:fu + U], emb[fi:fi + I],
                            head[fi:fi + I], holdout=0.3, seed=1)
    assert ideal["user_row"]["r2"] > 0.99 and ideal["user_row"]["cosine"] > 0.99
    assert ideal["hr1"]["probe_user_row"] == ideal["hr1"]["oracle_user_row"]
