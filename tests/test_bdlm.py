"""BDLM joint training (pipeline/bdlm/, stages/joint_train.py, stages/evaluate_joint.py)
on tiny models built from configs: a 16-dim LLaMA and an 8-dim LightGCN / NCF."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from pipeline import lineage
from pipeline.bdlm import (DRS, JointConfig, JointData, JointTrainer, LLMRows, Sharing, check_id_spaces,
                           initial_projection, llm_features)
from pipeline.errors import PipelineError
from pipeline.llm.sft import SFTConfig, training_pairs
from pipeline.llm.sft import train as sft_train
from pipeline.llm.tokens import item_token, new_tokens, user_token
from pipeline.models.collaborative import LightGCN, NeuMF
from pipeline.models.data import Interactions
from tests.llm_tiny import tiny_llama, tiny_t5, tiny_tokenizer

U, I, HIDDEN, DIM = 8, 6, 16, 8


def liked(u: int) -> int:
    return u % 3


def split_table(n_per_user: int = 3) -> pa.Table:
    rows = [(u, (u + k) % I, k, u * 10 + k) for u in range(U) for k in range(n_per_user)]
    u, i, t, r = zip(*rows)
    return pa.table({"uid": pa.array(u, pa.int32()), "iid": pa.array(i, pa.int32()),
                     "rating": pa.array([4.0] * len(u), pa.float32()), "timestamp": pa.array(t, pa.int64()),
                     "raw_row": pa.array(r, pa.int64())})


def prompt_table(seed: int = 0) -> pa.Table:
    """Interaction rows (1/0) and top-K rows in the build_prompts contract."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(U):
        hist = " ".join(item_token(liked(u)) for _ in range(3))
        pos, neg = liked(u), 3 + u % 3
        for iid, label in ((pos, 1), (neg, 0)):
            rows.append({"task": "interaction", "family": "rec", "answer": "Yes" if label else "No",
                         "prompt": f"User {user_token(u)} has watched {hist}. Will the user watch {item_token(iid)}? Answer:",
                         "uid": u, "iid": iid, "candidates": [], "label_index": -1, "label": label, "rating": float("nan")})
        cands = rng.permutation(I).tolist()
        rows.append({"task": "topk", "family": "rec", "answer": item_token(pos), "uid": u, "iid": pos,
                     "prompt": f"User {user_token(u)} has watched {hist}. Candidates: "
                               + ", ".join(item_token(c) for c in cands) + ". Answer:",
                     "candidates": cands, "label_index": cands.index(pos), "label": -1, "rating": float("nan")})
    schema = pa.schema([("task", pa.string()), ("family", pa.string()), ("prompt", pa.string()),
                        ("answer", pa.string()), ("uid", pa.int32()), ("iid", pa.int32()),
                        ("candidates", pa.list_(pa.int32())), ("label_index", pa.int32()), ("label", pa.int8()),
                        ("rating", pa.float32())])
    return pa.Table.from_pylist(rows, schema=schema)


def tokenizer():
    tok = tiny_tokenizer()
    tok.add_tokens(new_tokens(U, I))
    return tok


def domain(kind: str = "lightgcn"):
    torch.manual_seed(1)
    if kind == "ncf":
        return NeuMF(U, I, {"dim": DIM}).eval()
    m = LightGCN(U, I, {"dim": DIM, "n_layers": 2})
    m.attach(Interactions.from_table(split_table(), U, I))
    return m.eval()


CFG = JointConfig(steps=4, batch_size=3, drs_batch_size=3, lam=0.1, warmup_steps=1, lr=1e-3, drs_lr=1e-2,
                  max_len=64, checkpoint_every=2, seed=7)


def trainer(cfg: JointConfig = CFG, kind: str = "lightgcn", sides=("llm", "drs"), params_hash=None,
            llm_kind: str = "llama") -> JointTrainer:
    """A fresh, deterministic setup: the same weights every call."""
    tok = tokenizer()
    llm = tiny_llama(tok, hidden=HIDDEN) if llm_kind == "llama" else tiny_t5(tok, hidden=HIDDEN)
    rows = LLMRows(llm, tok.convert_tokens_to_ids(user_token(0)), tok.convert_tokens_to_ids(item_token(0)), U, I)
    dom = domain(kind)
    proj, _ = initial_projection(dom, rows, seed=2024)
    drs = DRS(dom, HIDDEN, proj)
    sharing = Sharing(rows.table("user"), rows.table("item"))
    data = JointData.build(prompt_table(), tok, llm_kind == "t5", {"interaction": 1.0, "topk": 1.0}, False, cfg)
    return JointTrainer(llm, tok, drs, sharing, rows, data, cfg, params_hash, sides)


def weights(t: JointTrainer) -> dict[str, torch.Tensor]:
    out = {f"llm.{k}": v for k, v in t.model.state_dict().items()}
    out.update({f"drs.{k}": v for k, v in t.drs.state_dict().items()})
    out.update({f"m.{k}": v for k, v in t.m.state_dict().items()})
    return out


def assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sharing_starts_from_the_llm_rows_and_is_written_in_algorithm_1_order():
    t = trainer()
    assert torch.equal(t.m.user, t.rows.table("user")) and torch.equal(t.m.item, t.rows.table("item"))
    assert t.drs.proj is not None and "learned linear 8 -> 16" in t.drs.projection
    t.run()
    # per step: the LLM writes its users then items, then the DRS does
    expected = [(s, side, name) for s in range(CFG.steps) for side in ("llm", "drs") for name in ("user", "item")]
    assert [w[:3] for w in t.m.writes] == expected
    # the last writer of a row is the DRS: M holds P(E^drs) for the last DRS batch's ids
    last = t.history[-1]
    assert last["drs_ml"] > 0 and last["llm_ml"] > 0
    users = torch.tensor(sorted({int(u) for u in t.data.drs_users}))
    written = [u for u in users if not torch.equal(t.m.user[u], t.rows.table("user")[u])]
    assert written, "the DRS overwrote the LLM's rows of some users"
    p_rows = t.drs.table("user")
    assert any(torch.allclose(t.m.user[u], p_rows[u]) for u in written)


def test_a_non_finite_loss_stops_joint_training_before_the_update(monkeypatch):
    import pipeline.bdlm.train as train_mod

    t = trainer(JointConfig(**{**CFG.__dict__, "steps": 2}))
    before = {k: v.clone() for k, v in t.drs.state_dict().items()}
    monkeypatch.setattr(train_mod.F, "binary_cross_entropy_with_logits", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(PipelineError, match="the DRS loss is nan at step 1"):
        t.run()
    assert all(torch.equal(v, t.drs.state_dict()[k]) for k, v in before.items())  # no update reached the weights


def test_share_users_only_writes_the_user_table():
    t = trainer(JointConfig(**{**CFG.__dict__, "share": "users", "steps": 2}))
    before = t.m.item.clone()
    t.run()
    assert {w[2] for w in t.m.writes} == {"user"} and torch.equal(t.m.item, before)


def test_lambda_zero_is_independent_training_bitwise():
    cfg0 = JointConfig(**{**CFG.__dict__, "lam": 0.0})
    joint = trainer(cfg0)
    joint.run()
    # each side alone, same seed: an LLM-only trainer, and a DRS-only trainer fed by that LLM
    llm_alone, drs_alone = trainer(cfg0, sides=("llm",)), trainer(cfg0, sides=("drs",))
    drs_alone.features = lambda prompts: llm_features(llm_alone.model, llm_alone.tok, prompts, cfg0.max_len,
                                                      cfg0.pooling)
    llm_hist, drs_hist = [], []
    for step in range(cfg0.steps):
        llm_hist.append(llm_alone.llm_step(step)["llm_loss"])
        drs_hist.append(drs_alone.drs_step(step, 0)["drs_loss"])
    assert [h["llm_loss"] for h in joint.history] == llm_hist
    assert [h["drs_loss"] for h in joint.history] == drs_hist
    for k, v in llm_alone.model.state_dict().items():
        assert torch.equal(v, joint.model.state_dict()[k]), k
    for k, v in drs_alone.drs.state_dict().items():
        assert torch.equal(v, joint.drs.state_dict()[k]), k
    # the LLM side at lambda = 0 is plain SFT: pipeline.llm.sft.train on the same prompts
    tok = tokenizer()
    prompts, answers = training_pairs(prompt_table(), {"interaction": 1.0, "topk": 1.0}, False, cfg0.seed)
    sft_cfg = SFTConfig(steps=cfg0.steps, batch_size=cfg0.batch_size, lr=cfg0.lr, weight_decay=cfg0.weight_decay,
                        warmup_steps=cfg0.warmup_steps, max_len=cfg0.max_len, seed=cfg0.seed)
    sft_model, sft_hist, _ = sft_train(tiny_llama(tok, hidden=HIDDEN), tok, prompts, answers, sft_cfg, log=lambda s: None)
    assert [h["loss"] for h in sft_hist] == llm_hist
    for k, v in sft_model.state_dict().items():
        assert torch.equal(v, joint.model.state_dict()[k]), k
    # and lambda > 0 does couple them (Adam's sign-like first updates absorb a small pull: the
    # token rows move, the tiny LLM's losses need a larger lambda to show it)
    coupled = trainer(CFG)
    coupled.run()
    assert not torch.equal(coupled.rows.table("user"), llm_alone.rows.table("user"))
    assert [h["drs_loss"] for h in coupled.history] != drs_hist
    strong = trainer(JointConfig(**{**CFG.__dict__, "lam": 10.0}))
    strong.run()
    assert [h["llm_loss"] for h in strong.history] != llm_hist


@pytest.mark.parametrize("kind", ["lightgcn", "ncf"])
def test_drs_receives_the_llm_feature_and_starts_as_the_domain_model(kind):
    t = trainer(kind=kind)
    users, items = torch.arange(U), torch.tensor([liked(u) for u in range(U)])
    h = torch.randn(U, HIDDEN)
    with torch.no_grad():
        own = (t.drs.domain.logits(users, items) if kind == "ncf"
               else t.drs.domain.pair_features(users, items).sum(-1))
        assert torch.allclose(t.drs.logits(h, users, items), own, atol=1e-6)  # w_h = 0 at the start
    t.run()
    with torch.no_grad():
        a, b = t.drs.logits(h, users, items), t.drs.logits(h + 1.0, users, items)
    assert not torch.allclose(a, b), "the score does not depend on h"
    assert t.drs.head.weight[0, :HIDDEN].abs().sum() > 0
    # candidate scoring: one h shared by each prompt's candidates
    c = t.drs.candidate_logits(h[:2], users[:2], torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert c.shape == (2, 3)
    assert torch.allclose(c[1, 2], t.drs.logits(h[1:2], users[1:2], torch.tensor([5]))[0])


def test_one_drs_step_moves_scores_by_little_whatever_the_size_of_h():
    """A common offset in h (as real LLM features have) must not let one Adam step on w_h
    swing every logit: with h entering at 1/sqrt(hidden) the step moves a logit by
    ~lr * sqrt(hidden) * mean|h_k| (0.024 here), not lr * hidden * mean|h_k| (0.58)."""
    torch.manual_seed(0)
    t = trainer()
    hidden = 576
    drs = DRS(t.drs.domain, hidden, torch.randn(DIM, hidden) / DIM ** 0.5)
    opt = torch.optim.Adam(drs.head.parameters(), lr=1e-3)
    users, items = torch.arange(8), torch.tensor([liked(u) for u in range(8)])
    h = 1.0 + 0.1 * torch.randn(8, hidden)  # a shared component, as an LLM's last-token states
    other = 1.0 + 0.1 * torch.randn(8, hidden)
    with torch.no_grad():
        before = drs.logits(other, users, items)
    loss = F.binary_cross_entropy_with_logits(drs.logits(h, users, items), torch.zeros(8))
    loss.backward()
    opt.step()
    with torch.no_grad():
        moved = (drs.logits(other, users, items) - before).abs().max()
    assert 0 < moved < 0.1, moved


def test_seq2seq_llm_trains_jointly_too():
    t = trainer(JointConfig(**{**CFG.__dict__, "steps": 2}), llm_kind="t5")
    before = t.rows.table("item").clone()
    t.run()
    assert len(t.history) == 2 and all(np.isfinite(h["llm_loss"]) and np.isfinite(h["drs_loss"]) for h in t.history)
    assert not torch.equal(t.rows.table("item"), before)
    for pooling in ("last", "mean"):
        assert llm_features(t.model, t.tok, t.data.drs_prompts[:2], 64, pooling).shape == (2, HIDDEN)


@pytest.mark.parametrize("llm_kind", ["llama", "t5"])
def test_pooling_last_and_mean_features(llm_kind):
    t = trainer(llm_kind=llm_kind)
    prompts = t.data.drs_prompts[:3]
    last = llm_features(t.model, t.tok, prompts, 64, "last")
    mean = llm_features(t.model, t.tok, prompts, 64, "mean")
    assert last.shape == mean.shape == (3, HIDDEN) and not torch.allclose(last, mean)
    # batching does not change a prompt's feature (right padding is excluded)
    alone = llm_features(t.model, t.tok, prompts[:1], 64, "last")
    assert torch.allclose(alone[0], last[0], atol=1e-5)


def test_kill_and_resume_is_bitwise_the_same_run(tmp_path):
    whole = trainer()
    whole.run(tmp_path / "a")
    first = trainer()
    first.run(tmp_path / "b", stop_after=3)  # 3 is not a checkpoint_every multiple: saved on stop
    assert first.step == 3 and (tmp_path / "b/latest/state.pt").exists()
    second = trainer()  # a new process: fresh objects, same inputs
    second.run(tmp_path / "b")
    assert second.step == CFG.steps
    assert [h for h in second.history] == whole.history
    assert_bitwise(weights(second), weights(whole))


def test_resume_refuses_a_checkpoint_from_other_params(tmp_path):
    t = trainer(params_hash="a" * 64)
    t.run(tmp_path, stop_after=2)
    before = (tmp_path / "latest/state.pt").read_bytes()
    other = trainer(params_hash="b" * 64)
    with pytest.raises(PipelineError, match="a{64}.*b{64}"):
        other.run(tmp_path)
    assert (tmp_path / "latest/state.pt").read_bytes() == before


def test_bad_inputs_are_named():
    with pytest.raises(PipelineError, match="joint.lambda"):
        JointConfig(lam=-0.1).check()
    with pytest.raises(PipelineError, match="vocab/pe/vocab.json.*domain/x/lightgcn/config.json"):
        check_id_spaces({"n_users": 8, "n_items": 6}, "vocab/pe/vocab.json",
                        {"n_users": 8, "n_items": 7}, "domain/x/lightgcn/config.json")
    with pytest.raises(PipelineError, match="share"):
        JointConfig(share="all").check()


# ----------------------------------------------------------------------------- the stages


def make_project(root: Path, vocab_items: int = I) -> None:
    """The inputs joint_train reads, built from tiny models, under root/data."""
    d = root / "data"
    for s, t in (("train", split_table(3)), ("valid", split_table(1)), ("test", split_table(1))):
        (d / "split/tiny").mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"split/tiny/{s}.parquet")
    (d / "kcore/tiny").mkdir(parents=True)
    pq.write_table(pa.table({"uid": pa.array(range(U), pa.int32())}), d / "kcore/tiny/users.parquet")
    pq.write_table(pa.table({"iid": pa.array(range(I), pa.int32())}), d / "kcore/tiny/items.parquet")
    (d / "prompts/tiny/tokens").mkdir(parents=True)
    for s in ("train", "valid", "test"):
        pq.write_table(prompt_table(seed={"train": 0, "valid": 1, "test": 2}[s]), d / f"prompts/tiny/tokens/{s}.parquet")
    tok = tokenizer()
    llm = tiny_llama(tok, hidden=HIDDEN)
    vocab = d / "llm/tiny/vocab/pe"
    llm.save_pretrained(vocab)
    tok.save_pretrained(vocab)
    (vocab / "vocab.json").write_text(json.dumps({
        "n_users": U, "n_items": vocab_items, "first_user_token_id": tok.convert_tokens_to_ids(user_token(0)),
        "first_item_token_id": tok.convert_tokens_to_ids(item_token(0)), "seed": 2024, "preload_from": "lightgcn",
        "id_maps": lineage.record("tiny", d / "kcore/tiny")}))
    dom = domain()
    (d / "domain/tiny/lightgcn").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in dom.state_dict().items()}, str(d / "domain/tiny/lightgcn/model.safetensors"))
    (d / "domain/tiny/lightgcn/config.json").write_text(json.dumps(
        {"model": "lightgcn", "dim": DIM, "n_layers": 2, "n_users": U, "n_items": I, "train": {},
         "id_maps": lineage.record("tiny", d / "kcore/tiny")}))
    params = {"domain": {"train": {"epochs": 1, "lr": 0.01, "weight_decay": 0.0, "patience": 1, "eval_every": 1,
                                   "seed": 1}, "lightgcn": {"dim": DIM, "n_layers": 2}},
              "evaluate_llm": {"max_users": 5, "seed": 3, "batch_size": 4, "mixed_precision": "auto"},
              "evaluation": {"confidence": 0.95, "bootstrap_samples": 200, "seed": 0},
              "joint": {"experiments": ["bdlm"], "lambda": 0.1,
                        "train": {**{k: v for k, v in CFG.__dict__.items() if k != "lam"}, "steps": 2,
                                  "task_weights": {"interaction": 1.0, "topk": 1.0}, "aux": False},
                        "experiment": {"bdlm": {"model": "lightgcn"}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def stage(monkeypatch, module, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    module.main()


def test_stages_train_and_evaluate_a_tiny_project(tmp_path, monkeypatch):
    from stages import evaluate_joint, joint_train

    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    stage(monkeypatch, joint_train, "tiny", "bdlm")
    out = tmp_path / "data/joint/tiny/bdlm"
    assert {p.name for p in out.iterdir()} == {"llm", "drs.safetensors", "sharing.safetensors", "config.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["projection"].startswith("learned linear 8 -> 16") and config["lambda"] == 0.1
    assert load_file(str(out / "sharing.safetensors"))["user"].shape == (U, HIDDEN)
    curve = json.loads((tmp_path / "data/metrics/joint_train/tiny/bdlm.json").read_text())
    assert len(curve["history"]) == 2 and curve["train_seconds"] >= 0
    assert not (tmp_path / "data/checkpoints/joint/tiny/bdlm").exists() or not any(
        (tmp_path / "data/checkpoints/joint/tiny/bdlm").rglob("state.pt"))
    stage(monkeypatch, evaluate_joint, "tiny", "bdlm")
    m = json.loads((tmp_path / "data/metrics/joint/tiny/bdlm.json").read_text())
    assert set(m) == {"dataset", "experiment", "domain_model", "lambda", "users_scored", "llm", "drs", "schema",
                      "confidence"}
    assert m["users_scored"] == 5 and m["domain_model"] == "lightgcn"
    assert set(m["llm"]["binary"]) == {"precision", "recall", "f1", "threshold", "accuracy", "auc", "f1_floor"}
    assert "HR@1" in m["llm"]["topk"] and "topk/HR@1" in m["llm"]["ci"]
    assert {"binary", "topk", "ci", "users_scored"} == set(m["drs"]) and {"HR@1", "HR@2", "NDCG@2"} <= set(m["drs"]["topk"])
    for side in ("llm", "drs"):  # per-user outcomes for the report's paired tests, on the same 5 users
        t = pq.read_table(tmp_path / f"data/outcomes/joint/tiny/bdlm-{side}.parquet")
        assert len(set(t["uid"].to_pylist())) == 5


def test_stage_errors_leave_no_artifact(tmp_path, monkeypatch):
    from stages import joint_train

    make_project(tmp_path, vocab_items=I + 1)  # the LLM's vocab.json disagrees with the domain config
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="vocab/pe/vocab.json.*lightgcn/config.json"):
        stage(monkeypatch, joint_train, "tiny", "bdlm")
    # a bad entry anywhere in params.yaml stops every stage (pipeline/config.py validates the
    # whole file), naming the entry
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for name, entry, message in (("bad", {"model": "lightgcn", "lambda": -1}, "joint.experiment.bad.lambda = -1"),
                                 ("gmf", {"model": "gmf"}, "joint.experiment.gmf.model = 'gmf'")):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(
            {**params, "joint": {**params["joint"], "experiment": {**params["joint"]["experiment"], name: entry}}}))
        with pytest.raises(PipelineError, match=message):
            stage(monkeypatch, joint_train, "tiny", name)
    assert not (tmp_path / "data/joint").exists() and not (tmp_path / "data/metrics").exists()
    assert not (tmp_path / "data/checkpoints").exists()
