"""SFT and LLM scoring on tiny models built from configs (decoder-only and seq2seq)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
import torch

from pipeline.errors import PipelineError
from pipeline.llm.encoding import IGNORE, collate, encode, prompt_batch
from pipeline.eval.metrics import summarize
from pipeline.llm.scoring import ScoreConfig, Scorer, evaluate_llm
from pipeline.llm.sft import SFTConfig, batch_indices, train
from pipeline.llm.tokens import item_text, new_tokens
from tests.llm_tiny import N_ITEMS, N_USERS, liked, prompt, samples, tiny_llama, tiny_t5, tiny_tokenizer, tokenizer_with_ids


def topk_table(tokens: bool = True) -> pa.Table:
    rng = np.random.default_rng(1)
    rows = {"task": [], "family": [], "prompt": [], "answer": [], "uid": [], "iid": [], "candidates": [],
            "label_index": [], "label": [], "rating": []}
    for u in range(N_USERS):
        cands = rng.permutation(N_ITEMS).tolist()
        for k, v in (("task", "topk"), ("family", "rec"), ("prompt", prompt(u, cands, tokens)),
                     ("answer", item_text(liked(u), tokens)), ("uid", u), ("iid", liked(u)), ("candidates", cands),
                     ("label_index", cands.index(liked(u))), ("label", -1), ("rating", float("nan"))):
            rows[k].append(v)
    return pa.table(rows)


def build(kind: str, tok):
    return tiny_llama(tok) if kind == "llama" else tiny_t5(tok)


def test_encode_masks_the_prompt_and_keeps_head_and_tail():
    tok = tokenizer_with_ids()
    enc = encode(tok, ["User <uid_1> has watched movies. Answer:"], ["<iid_2>"], seq2seq=False, max_len=64)
    ids, labels = enc.input_ids[0], enc.labels[0]
    n = enc.prompt_lens[0]
    assert labels[:n] == [IGNORE] * n
    assert labels[n:] == [tok.convert_tokens_to_ids("<iid_2>"), tok.eos_token_id] == ids[n:]
    long = "User <uid_1> " + "history words " * 100 + "Candidates: <iid_3> <iid_4> Answer:"
    enc = encode(tok, [long], ["<iid_3>"], seq2seq=False, max_len=40)
    assert enc.truncated == 1 and len(enc.input_ids[0]) == 40
    kept = tok.decode(enc.input_ids[0])
    assert kept.startswith("User <uid_1>") and "<iid_3> <iid_4> Answer:" in kept.replace("  ", " ")


def test_prompt_batch_points_at_the_last_prompt_token():
    tok = tokenizer_with_ids()
    batch, pos, _ = prompt_batch(tok, ["User Answer:", "User <uid_3> has watched movies. Answer:"], 64)
    for row, p in enumerate(pos.tolist()):
        assert batch["attention_mask"][row, p] == 1
        assert batch["attention_mask"][row, p + 1:].sum() == 0


def test_batch_order_is_a_pure_function_of_step():
    cfg = SFTConfig(batch_size=5, seed=3)
    a = [batch_indices(23, cfg, s, 0) for s in range(10)]
    assert a == [batch_indices(23, cfg, s, 0) for s in range(10)]
    assert sorted(sum(a[:5], [])[:23]) == list(range(23))  # every row once per epoch


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_sft_learns_a_planted_pattern_and_scoring_sees_it(kind):
    torch.manual_seed(0)
    tok = tokenizer_with_ids()
    untrained = build(kind, tok)
    scorer_cfg = ScoreConfig(batch_size=8, max_len=96)
    table = topk_table()
    known = sp.csr_matrix((N_USERS, N_ITEMS))
    before = summarize(evaluate_llm(Scorer(untrained, tok, scorer_cfg), table.slice(0, 0), table, N_ITEMS, known, True)[0])
    model, history, stats = train(build(kind, tok), tok, *samples(), SFTConfig(steps=100, batch_size=8, lr=5e-3,
                                                                                   warmup_steps=2, max_len=96))
    assert stats["samples"] == 4 * N_USERS and history[-1]["loss"] < history[0]["loss"] / 3
    after = summarize(evaluate_llm(Scorer(model, tok, scorer_cfg), table.slice(0, 0), table, N_ITEMS, known, True)[0])
    assert after["topk"]["HR@1"] >= 0.9 > before["topk"]["HR@1"] + 0.3


def test_text_ids_are_scored_by_whole_answer_sequences():
    tok = tiny_tokenizer()
    table = topk_table(tokens=False)
    known = sp.csr_matrix((N_USERS, N_ITEMS))
    cfg = ScoreConfig(batch_size=8, max_len=96)
    before = summarize(evaluate_llm(Scorer(tiny_llama(tok), tok, cfg), table.slice(0, 0), table, N_ITEMS, known,
                                   tokens=False)[0])
    model, _, _ = train(tiny_llama(tok), tok, *samples(tokens=False), SFTConfig(steps=150, batch_size=8, lr=5e-3,
                                                                                   warmup_steps=2, max_len=96))
    out = summarize(evaluate_llm(Scorer(model, tok, cfg), table.slice(0, 0), table, N_ITEMS, known, tokens=False)[0])
    assert out["topk"]["HR@1"] >= 0.6 and out["topk"]["HR@1"] > before["topk"]["HR@1"] + 0.3


def test_sequence_logprob_matches_a_direct_computation():
    tok = tokenizer_with_ids()
    model = tiny_llama(tok).eval()
    scorer = Scorer(model, tok, ScoreConfig(max_len=64))
    got = scorer.sequence(["User <uid_1> has watched movies. Answer:"], ["item 12"])[0]
    p = tok("User <uid_1> has watched movies. Answer:", add_special_tokens=False)["input_ids"]
    a = tok("item 12", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0], -1)
    want = sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(a))
    assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("extra", [{}, {"bucket": 3}, {"bucket": 3, "lora": True, "lora_r": 4, "row_lr": 1e-2}],
                         ids=["plain", "bucketed", "bucketed-lora"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, extra):
    tok = tokenizer_with_ids()
    new_ids = tok.convert_tokens_to_ids(new_tokens(N_USERS, N_ITEMS))
    cfg = SFTConfig(steps=10, batch_size=4, lr=1e-3, warmup_steps=2, max_len=96, checkpoint_every=3, **extra)
    whole, hist_whole, _ = train(tiny_llama(tok), tok, *samples(), cfg, new_token_ids=new_ids)
    train(tiny_llama(tok), tok, *samples(), cfg, checkpoints=tmp_path, stop_after=5, new_token_ids=new_ids)
    saved = json.loads((tmp_path / (tmp_path / "latest").read_text().strip() / "checkpoint.json").read_text())
    assert saved["step"] == 5 and len(saved["meta"]["history"]) == 5
    resumed, hist_resumed, _ = train(tiny_llama(tok), tok, *samples(), cfg, checkpoints=tmp_path,
                                     new_token_ids=new_ids)
    assert [h["loss"] for h in hist_resumed] == [h["loss"] for h in hist_whole]
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_of_other_inputs(tmp_path):
    tok = tiny_tokenizer()
    cfg = SFTConfig(steps=4, batch_size=2, warmup_steps=1, max_len=64, checkpoint_every=2)
    prompts, answers = ["Will the user watch it? Answer:"] * 6, ["Yes", "No"] * 3
    train(tiny_llama(tok), tok, prompts, answers, cfg, checkpoints=tmp_path, stop_after=2, identity="a" * 64)
    with pytest.raises(PipelineError, match="a{64}.*b{64}"):
        train(tiny_llama(tok), tok, prompts, answers, cfg, checkpoints=tmp_path, identity="b" * 64)
    with pytest.raises(PipelineError, match="params hash"):  # no identity given: cfg and pairs decide it
        train(tiny_llama(tok), tok, prompts, answers[::-1], cfg, checkpoints=tmp_path)


def test_lora_trains_adapters_and_the_id_token_rows():
    tok = tokenizer_with_ids()
    base = tiny_llama(tok)
    before = base.get_input_embeddings().weight.detach().clone()
    new_ids = tok.convert_tokens_to_ids(new_tokens(N_USERS, N_ITEMS))
    model, history, _ = train(base, tok, *samples(), SFTConfig(steps=20, batch_size=8, lr=5e-3, warmup_steps=2,
                                                               max_len=96, lora=True, lora_r=4),
                              new_token_ids=new_ids)
    after = model.get_input_embeddings().weight.detach()
    old = [i for i in range(len(tok)) if i not in set(new_ids)]
    assert torch.equal(after[old], before[old])  # the word vocabulary stays frozen
    assert not torch.equal(after[new_ids], before[new_ids])
    assert history[-1]["loss"] < history[0]["loss"]


def test_learning_curve_points_before_training_every_n_steps_and_at_the_end():
    """sft.curve_every: evaluate(model) at step 0, every n steps and the last, logged with the
    number of training samples seen; the model is back in train mode after each point."""
    from pipeline.llm.sft import SFTConfig, train as sft_train
    from tests.llm_tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=16)
    seen = []

    def evaluate(m):
        seen.append(m.training)
        return {"valid_topk_HR@1": float(len(seen))}

    cfg = SFTConfig(steps=5, batch_size=2, warmup_steps=1, max_len=64, curve_every=2)
    _, history, _ = sft_train(model, tok, ["Will the user watch it? Answer:"] * 6, ["Yes", "No"] * 3, cfg,
                              evaluate=evaluate)
    curve = [(h["step"], h["samples"], h["valid_topk_HR@1"]) for h in history if "samples" in h]
    assert curve == [(0, 0, 1.0), (2, 4, 2.0), (4, 8, 3.0), (5, 10, 4.0)]
    assert seen == [False] * 4 and "loss" not in history[0] and history[-1]["loss"] > 0


def test_lora_rows_are_an_optimizer_group_with_their_own_learning_rate():
    from accelerate import Accelerator

    from pipeline.llm.sft import ROW_PARAMS, _lora, prepare_optimization

    tok = tokenizer_with_ids()
    new_ids = tok.convert_tokens_to_ids(new_tokens(N_USERS, N_ITEMS))
    model = _lora(tiny_llama(tok), SFTConfig(lora=True, lora_r=4), new_ids)
    _, opt, sched = prepare_optimization(Accelerator(cpu=True), model, 1e-3, 0.0, 0, 10, row_lr=3e-2)
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr = {g["lr"]: [names[id(p)] for p in g["params"]] for g in opt.param_groups}
    assert sorted(by_lr) == [1e-3, 3e-2]
    assert by_lr[3e-2] and all(ROW_PARAMS in n for n in by_lr[3e-2])
    assert by_lr[1e-3] and all("lora_" in n for n in by_lr[1e-3])  # the adapters, nothing frozen
    sched.step()
    assert sched.get_last_lr()[1] / sched.get_last_lr()[0] == pytest.approx(30)  # one schedule, both groups
    # the positional call BDLM's joint training makes: one group at lr
    _, opt, _ = prepare_optimization(Accelerator(cpu=True), tiny_llama(tok), 1e-3, 0.0, 0, 10)
    assert [g["lr"] for g in opt.param_groups] == [1e-3]


def test_under_lora_the_new_rows_move_at_row_lr():
    tok = tokenizer_with_ids()
    new_ids = tok.convert_tokens_to_ids(new_tokens(N_USERS, N_ITEMS))
    before = tiny_llama(tok).get_input_embeddings().weight.detach()[new_ids].clone()
    moved, losses = {}, {}
    for row_lr in (1e-4, 1e-2):
        cfg = SFTConfig(steps=10, batch_size=8, lr=1e-3, warmup_steps=0, max_len=96, lora=True, lora_r=4,
                        row_lr=row_lr)
        model, history, _ = train(tiny_llama(tok), tok, *samples(), cfg, new_token_ids=new_ids)
        rows = model.get_input_embeddings().weight.detach()[new_ids]
        moved[row_lr] = ((rows - before).norm(dim=1) / before.norm(dim=1)).mean().item()
        losses[row_lr] = history[-1]["loss"]
        assert all(h["row_lr"] == pytest.approx(h["lr"] * row_lr / 1e-3) for h in history)
    # Adam moves a parameter by about its rate per step: 100x the rate, far more movement
    assert moved[1e-2] > 20 * moved[1e-4] > 0
    assert moved[1e-2] > 0.05
    assert losses[1e-2] < losses[1e-4]


def test_bucketed_batches_group_similar_lengths_and_cover_each_row_once_per_epoch():
    lengths = np.random.default_rng(5).integers(10, 200, 103)
    cfg = SFTConfig(batch_size=4, seed=3, bucket=5)
    plain = SFTConfig(batch_size=4, seed=3)
    per_epoch = -(-103 // 4) + 1
    got = [batch_indices(103, cfg, s, 0, lengths=lengths) for s in range(3 * per_epoch)]
    assert got == [batch_indices(103, cfg, s, 0, lengths=lengths) for s in range(3 * per_epoch)]
    flat = sum(got, [])
    assert sorted(flat[:103]) == list(range(103)) and sorted(flat[103:206]) == list(range(103))
    # lengths=None, or bucket 1, is the plain permutation
    assert batch_indices(103, cfg, 2, 0) == batch_indices(103, plain, 2, 0, lengths=lengths)

    def padding(c):
        rows = [batch_indices(103, c, s, 0, lengths=lengths) for s in range(25)]
        return sum(max(lengths[r]) * len(r) - sum(lengths[r]) for r in rows)
    assert padding(cfg) < padding(plain) / 3
    # per rank and micro-step, as in training on several processes: the same rows, split
    two = SFTConfig(batch_size=4, seed=3, bucket=5, grad_accum=2)
    split = [batch_indices(103, two, 1, m, r, 2, lengths=lengths) for m in range(2) for r in range(2)]
    assert sum(split, []) == flat[16:32]


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_bucketed_batches_give_every_sample_the_loss_it_has_alone(kind):
    """Padding and its attention mask change nothing: a sample's answer log-likelihood is
    the same in a length-bucketed batch, a shuffled batch, or alone."""
    from pipeline.llm.encoding import collate
    from pipeline.llm.forward import answer_logprobs

    tok = tokenizer_with_ids()
    model = build(kind, tok).eval()
    prompts, answers = samples(reps=1)
    prompts = [p + " history" * (i % 7) for i, p in enumerate(prompts)]  # lengths that differ
    enc = encode(tok, prompts, answers, kind == "t5", 96)
    lengths = [len(r) for r in enc.input_ids]
    n = len(lengths)

    def per_sample(cfg):
        out = {}
        for s in range(-(-n // cfg.batch_size)):
            idx = batch_indices(n, cfg, s, 0, lengths=lengths)[:n - s * cfg.batch_size]
            with torch.no_grad():
                logp, rows, _ = answer_logprobs(model, collate(enc, idx, tok.pad_token_id, kind == "t5"))
            sums = torch.zeros(len(idx)).index_add_(0, rows, logp)
            counts = torch.zeros(len(idx)).index_add_(0, rows, torch.ones_like(logp))
            out.update({i: -(sums[j] / counts[j]).item() for j, i in enumerate(idx)})
        return out

    bucketed, plain, alone = (per_sample(SFTConfig(batch_size=b, seed=1, bucket=k)) for b, k in ((4, 3), (4, 1), (1, 1)))
    assert sorted(bucketed) == sorted(plain) == list(range(n))
    for i in range(n):
        assert bucketed[i] == pytest.approx(alone[i], abs=1e-5) and plain[i] == pytest.approx(alone[i], abs=1e-5)
    assert np.mean(list(bucketed.values())) == pytest.approx(np.mean(list(plain.values())), abs=1e-6)


# --- the alignment-loss option (llm.variant.<name>.align) --------------------------------

@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_answer_loss_and_state_is_answer_loss_plus_the_answer_position_state(arch):
    from pipeline.llm.forward import answer_loss, answer_loss_and_state, prompt_forward

    tok = tokenizer_with_ids()
    model = build(arch, tok).eval()
    seq2seq = arch == "t5"
    prompts, answers = samples(reps=1)
    enc = encode(tok, prompts[:4], answers[:4], seq2seq, 96)
    batch = collate(enc, [0, 1, 2, 3], tok.pad_token_id, seq2seq)
    start = model.config.decoder_start_token_id if seq2seq else None
    pbatch, pos, _ = prompt_batch(tok, prompts[:4], 96, start)
    with torch.no_grad():
        loss, state = answer_loss_and_state(model, batch)
        _, h = prompt_forward(model, pbatch, pos, "last")
    assert torch.allclose(loss, answer_loss(model, batch), atol=1e-6)
    assert torch.allclose(state.float(), h, atol=1e-5)


def test_alignment_loss_reads_each_prompts_first_user_row():
    from pipeline.llm.sft import alignment_loss

    tok = tokenizer_with_ids()
    model = tiny_llama(tok)
    users = torch.tensor(tok.convert_tokens_to_ids(new_tokens(N_USERS, 0)))
    ids = tok(["User <uid_3> then <uid_5> Answer:", "User <uid_7> Answer:", "no user here"],
              padding=True, return_tensors="pt")["input_ids"]
    rows = model.get_input_embeddings().weight.detach()
    u3, u7 = rows[users[3]], rows[users[7]]
    # the state equals row 3 in row 0, is orthogonal to row 7 in row 1; row 2 names no user
    ortho = torch.randn(u7.shape)
    ortho -= (ortho @ u7) / (u7 @ u7) * u7
    state = torch.stack([2.5 * u3, ortho, torch.randn(u3.shape)])  # cosine: the scale of s does not count
    loss = alignment_loss(model, {"input_ids": ids}, state, users)
    assert loss.item() == pytest.approx(0.5, abs=1e-5)  # (0 + 1) / 2, row 2 left out
    none = alignment_loss(model, {"input_ids": ids[2:]}, state[2:].requires_grad_(), users)
    assert none.item() == 0.0 and none.requires_grad


def test_alignment_loss_pulls_the_answer_state_towards_the_user_row():
    """Trained with align_weight > 0, the answer state's cosine with the prompt's user row
    rises well above the run without it (same seed, same batches). Without it the cosine goes
    strongly negative: with a tied head a user row is a wrong answer's output row, so cross-
    entropy pushes the answer state away from it (measured here: -0.90)."""
    from pipeline.llm.forward import prompt_forward

    tok = tokenizer_with_ids()
    new_ids = tok.convert_tokens_to_ids(new_tokens(N_USERS, N_ITEMS))
    prompts, answers = samples()
    cos = {}
    for weight in (0.0, 5.0):
        cfg = SFTConfig(steps=40, batch_size=8, lr=3e-3, warmup_steps=2, max_len=96, align_weight=weight)
        model, hist, _ = train(tiny_llama(tok), tok, prompts, answers, cfg, new_token_ids=new_ids,
                               user_token_ids=new_ids[:N_USERS])
        assert ("align" in hist[-1]) == (weight > 0)
        batch, pos, _ = prompt_batch(tok, [prompt(u, list(range(N_ITEMS))) for u in range(N_USERS)], 96)
        with torch.no_grad():
            _, h = prompt_forward(model, batch, pos, "last")
            rows = model.get_input_embeddings().weight[new_ids[:N_USERS]]
        cos[weight] = torch.nn.functional.cosine_similarity(h, rows, dim=-1).mean().item()
    assert cos[0.0] < 0 < cos[5.0] and cos[5.0] > cos[0.0] + 0.5, cos


def test_alignment_needs_user_tokens():
    from pipeline.errors import PipelineError

    tok = tokenizer_with_ids()
    with pytest.raises(PipelineError, match="align_weight > 0 needs user tokens"):
        train(tiny_llama(tok), tok, *samples(tokens=False), SFTConfig(steps=1, align_weight=1.0))
    with pytest.raises(PipelineError, match="align_weight must be a finite number >= 0"):
        train(tiny_llama(tok), tok, *samples(), SFTConfig(steps=1, align_weight=float("nan")),
              user_token_ids=[1])
