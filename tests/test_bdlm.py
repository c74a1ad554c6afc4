"""BDLM joint training (pipeline/bdlm/, stages/joint_train.py, stages/evaluate_joint.py)
on tiny models built from configs: a 16-dim LLaMA and an 8-dim LightGCN / NCF."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.bdlm import (JointConfig, JointTrainer, PairPrompts, check_id_spaces, evaluate_drs, llm_features, pair_features,
                           row_distance)
from pipeline.errors import PipelineError
from pipeline.llm.sft import SFTConfig, training_pairs
from pipeline.llm.sft import train as sft_train
from tests.bdlm_tiny import (CFG, HIDDEN, SUFFIXES, I, U, liked, make_project, prompt_table,
                             tokenizer, trainer)
from tests.llm_tiny import tiny_llama


def weights(t: JointTrainer) -> dict[str, torch.Tensor]:
    out = {f"llm.{k}": v for k, v in t.model.state_dict().items()}
    out.update({f"drs.{k}": v for k, v in t.drs.state_dict().items()})
    out.update({f"m.{k}": v for k, v in t.m.state_dict().items()})
    return out


def latest(folder: Path) -> Path:
    """The step folder a checkpoint folder's `latest` pointer names (pipeline/checkpoint.py)."""
    return folder / (folder / "latest").read_text().strip()


def assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_one_step_is_algorithm_1_on_shared_instances():
    """Per step: the LLM steps on a batch of instances and writes its rows for their ids into
    M; then the DRS steps on the SAME instances with h from the just-updated LLM and writes
    its rows; then its extra steps on the cached pool."""
    t = trainer(select=False)
    assert torch.equal(t.m.user, t.rows.table("user")) and torch.equal(t.m.item, t.rows.table("item"))
    assert t.drs.proj is not None and "learned linear 8 -> 16" in t.drs.projection
    log = []
    llm_step, drs_step, features = t.llm_step, t.drs_step, t.features

    def rec_llm(step):
        out, whole = llm_step(step)
        log.append(("llm", step, sorted({int(t.data.users[r]) for r in whole}),
                    t.model.lm_head.weight.detach().clone()))
        return out, whole

    def rec_feat(prefixes, items):
        log.append(("features", len(prefixes), t.model.lm_head.weight.detach().clone()))
        return features(prefixes, items)

    def rec_drs(step, k, users, items, labels, h):
        log.append(("drs", step, k, sorted(set(users.tolist()))))
        return drs_step(step, k, users, items, labels, h)

    t.llm_step, t.drs_step, t.features = rec_llm, rec_drs, rec_feat
    t.run()
    for step in range(CFG.steps):
        at = next(n for n, e in enumerate(log) if e[0] == "llm" and e[1] == step)
        _, _, llm_users, weights_after = log[at]
        feat, first = log[at + 1], log[at + 2]
        assert feat[0] == "features" and torch.equal(feat[2], weights_after)  # h from the just-updated LLM
        assert first[:3] == ("drs", step, 0) and first[3] == llm_users  # the same instances' users
        pool = [e for e in log[at + 3:at + 2 + CFG.drs_per_llm]]
        assert [e[:3] for e in pool] == [("drs", step, k) for k in range(1, CFG.drs_per_llm)]
    steps = [w[:3] for w in t.m.writes]
    for s in range(CFG.steps):
        mine = [w[1:] for w in steps if w[0] == s]
        assert mine[:2] == [("llm", "user"), ("llm", "item")] and mine[2:4] == [("drs", "user"), ("drs", "item")]
        assert len(mine) == 2 + 2 * CFG.drs_per_llm
    # the pool's h is cached per LLM snapshot: refreshed at steps 0 and 2 only
    assert sum(1 for e in log if e[0] == "features" and e[1] == len(t.pool)) == CFG.steps // CFG.refresh_every


def test_mutual_learning_loss_is_per_row_on_a_hand_case():
    a = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]])
    assert float(row_distance(a, b)) == pytest.approx((9.0 + 25.0) / 2)  # not / 6 (dims)
    t = trainer(select=False)
    with torch.no_grad():
        t.m.user[1] += 1.0  # M's row 1 one unit off in each of the 16 dims; item rows equal
    ids = {"user": torch.tensor([1, 2]), "item": torch.tensor([0])}
    assert float(t._ml(t.rows.rows, ids)) == pytest.approx(HIDDEN / 2, rel=1e-5)


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


def test_lambda_zero_llm_is_plain_sft_bitwise_and_lambda_couples_the_sides():
    cfg0 = JointConfig(**{**CFG.__dict__, "lam": 0.0})
    joint = trainer(cfg0)
    joint.run()
    tok = tokenizer()
    prompts, answers = training_pairs(prompt_table(), {"interaction": 1.0, "topk": 1.0}, False, cfg0.seed)
    sft_cfg = SFTConfig(steps=cfg0.steps, batch_size=cfg0.batch_size, lr=cfg0.lr, weight_decay=cfg0.weight_decay,
                        warmup_steps=cfg0.warmup_steps, max_len=cfg0.max_len, seed=cfg0.seed)
    sft_model, sft_hist, _ = sft_train(tiny_llama(tok, hidden=HIDDEN), tok, prompts, answers, sft_cfg)
    assert [h["loss"] for h in sft_hist] == [h["llm_loss"] for h in joint.history]
    for k, v in sft_model.state_dict().items():
        assert torch.equal(v, joint.model.state_dict()[k]), k
    # lambda > 0 couples them: the LLM's rows are pulled towards the DRS's
    strong = trainer(JointConfig(**{**CFG.__dict__, "lam": 10.0}))
    strong.run()
    assert [h["llm_loss"] for h in strong.history] != [h["llm_loss"] for h in joint.history]
    assert not torch.equal(strong.rows.table("user"), joint.rows.table("user"))
    assert strong.history[-1]["gap_user"] < joint.history[-1]["gap_user"]  # the sides moved towards each other
    assert joint.history[-1]["drift_llm_user"] > 0


@pytest.mark.parametrize("kind", ["lightgcn", "ncf"])
def test_drs_receives_the_llm_feature_and_starts_as_the_domain_model(kind):
    t = trainer(kind=kind, select=False)
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


def test_candidate_specific_h_changes_the_top_k_ranking():
    """A planted signal in h of the positive's pair prompt lifts HR@1 above the domain model's:
    with one h shared by the candidates (the old scorer) it could not change a ranking."""
    t = trainer(select=False)
    test = prompt_table(seed=2)
    signal = torch.randn(HIDDEN)

    def planted(prefixes, items):  # h = signal for each user's liked item, else 0
        out = []
        for p, its in zip(prefixes, items):
            u = next(k for k in range(U) if f"<uid_{k}>" in p)
            out.append(torch.stack([signal if i == liked(u) else torch.zeros(HIDDEN) for i in its]))
        return out

    base = evaluate_drs(t.drs, planted, test, test)
    with torch.no_grad():
        t.drs.head.weight[0, :HIDDEN] = 50.0 * signal / signal.norm()
    lifted = evaluate_drs(t.drs, planted, test, test)
    hr = lambda table: float(np.mean([r["rank"] == 0 for r in table.to_pylist() if r["protocol"] == "topk"]))  # noqa: E731
    assert hr(lifted) == 1.0 > hr(base)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_cached_prefix_features_equal_the_plain_forward(pooling):
    from pipeline.bdlm.features import _plain

    t = trainer(select=False)
    prefixes = t.data.pairs.prefixes([r for r in prompt_table()["pair_prefix"].to_pylist()][:5])
    items = [[0, 1, 2], [3], [4, 5, 0, 1], [], [2, 2]]
    cached = pair_features(t.model, t.data.pairs, prefixes, items, pooling, chunk=3)
    plain = _plain(t.model, t.data.pairs, prefixes, items, pooling, "no")
    assert [len(c) for c in cached] == [len(i) for i in items]
    for a, b in zip(cached, plain):
        torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-5)
    # a prefix cut to fit max_len is cut the same way on both paths
    small = PairPrompts(t.tok, SUFFIXES, 24)
    long = small.prefixes(["User <uid_1> has watched " + " ".join(["<iid_2>"] * 40) + ". Will the user watch"])
    a = pair_features(t.model, small, long, [[0, 5]], pooling)[0]
    b = _plain(t.model, small, long, [[0, 5]], pooling, "no")[0]
    torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-5)
    assert len(small.ids(long[0], 0)) <= 22


def test_selection_on_valid_never_returns_a_drs_worse_than_step_0():
    # a DRS head pushed hard by a huge learning rate: whatever training does, the DRS kept
    # scores on valid at least as well as the pretrained domain model (step 0)
    for lr in (1e-2, 5.0):
        t = trainer(JointConfig(**{**CFG.__dict__, "drs_head_lr": lr, "drs_lr": lr}))
        t.run()
        results = t.selected["candidates"]
        assert [r["step"] for r in results] == [0, 2, 4]
        assert t.selected["valid_NDCG@20"] >= results[0]["valid_NDCG@20"]
        assert t.selected["valid_NDCG@20"] == max(r["valid_NDCG@20"] for r in results)
        if t.selected["step"] == 0:  # the pretrained DRS itself, bitwise
            fresh = trainer()
            assert_bitwise(dict(t.drs.state_dict()), dict(fresh.drs.state_dict()))


def test_seq2seq_llm_trains_jointly_too():
    t = trainer(JointConfig(**{**CFG.__dict__, "steps": 2}), llm_kind="t5")
    before = t.rows.table("item").clone()
    t.run()
    assert len(t.history) == 2 and all(np.isfinite(h["llm_loss"]) and np.isfinite(h["drs_loss"]) for h in t.history)
    assert not torch.equal(t.rows.table("item"), before)
    for pooling in ("last", "mean"):
        h = pair_features(t.model, t.data.pairs, t.data.prefixes[:2], [[0, 1], [2]], pooling)
        assert [x.shape for x in h] == [(2, HIDDEN), (1, HIDDEN)]


@pytest.mark.parametrize("llm_kind", ["llama", "t5"])
def test_pooling_last_and_mean_features(llm_kind):
    t = trainer(llm_kind=llm_kind, select=False)
    prompts = prompt_table()["prompt"].to_pylist()[:3]
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
    assert first.step == 3 and (latest(tmp_path / "b") / "state.pt").exists()
    second = trainer()  # a new process: fresh objects, same inputs
    second.run(tmp_path / "b")
    assert second.step == CFG.steps
    assert [h for h in second.history] == whole.history
    assert second.selected == whole.selected
    assert_bitwise(weights(second), weights(whole))


def test_resume_refuses_a_checkpoint_from_other_params(tmp_path):
    t = trainer(params_hash="a" * 64)
    t.run(tmp_path, stop_after=2)
    before = (latest(tmp_path) / "state.pt").read_bytes()
    other = trainer(params_hash="b" * 64)
    with pytest.raises(PipelineError, match="a{64}.*b{64}"):
        other.run(tmp_path)
    assert (latest(tmp_path) / "state.pt").read_bytes() == before


def test_bad_inputs_are_named():
    for lam in (-0.1, float("nan")):
        with pytest.raises(PipelineError, match="joint.lambda"):
            JointConfig(lam=lam).check()
    with pytest.raises(PipelineError, match="joint.train.refresh_every must be >= 1, got 0"):
        JointConfig(refresh_every=0).check()
    with pytest.raises(PipelineError, match="joint.train.drs_domain_weight must be >= 0, got -1"):
        JointConfig(drs_domain_weight=-1.0).check()
    with pytest.raises(PipelineError, match="vocab/pe/vocab.json.*domain/x/lightgcn/config.json"):
        check_id_spaces({"n_users": 8, "n_items": 6}, "vocab/pe/vocab.json",
                        {"n_users": 8, "n_items": 7}, "domain/x/lightgcn/config.json")
    with pytest.raises(PipelineError, match="share"):
        JointConfig(share="all").check()


# ----------------------------------------------------------------------------- the stages


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
                      "confidence", "vocab", "drs_selected"}
    assert m["drs_selected"]["candidates"][0]["step"] == 0 and m["vocab"] == "pe"
    assert m["users_scored"] == 5 and m["domain_model"] == "lightgcn"
    assert set(m["llm"]["binary"]) == {"precision", "recall", "f1", "threshold", "accuracy", "auc", "f1_floor"}
    assert "HR@1" in m["llm"]["topk"] and "topk/HR@1" in m["llm"]["ci"]
    assert {"binary", "topk", "ci", "users_scored"} == set(m["drs"]) and {"HR@1", "HR@2", "NDCG@2"} <= set(m["drs"]["topk"])
    for side in ("llm", "drs"):  # per-user outcomes for the report's paired tests, on the same 5 users
        t = pq.read_table(tmp_path / f"data/outcomes/joint/tiny/bdlm-{side}.parquet")
        assert len(set(t["uid"].to_pylist())) == 5


def test_without_id_tokens_the_same_trainer_runs_with_no_sharing_module(tmp_path, monkeypatch):
    """w/o ET through the joint trainer: text ids, no M and no L_ml, the DRS still reads h."""
    from stages import evaluate_joint, joint_train

    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    stage(monkeypatch, joint_train, "tiny", "wo_et")
    out = tmp_path / "data/joint/tiny/wo_et"
    assert {p.name for p in out.iterdir()} == {"llm", "drs.safetensors", "config.json"}
    config = json.loads((out / "config.json").read_text())
    assert (config["vocab"], config["render"], config["projection"]) == ("text", "text", "none (no sharing module)")
    curve = json.loads((tmp_path / "data/metrics/joint_train/tiny/wo_et.json").read_text())
    assert all(h["llm_ml"] == 0 and h["drs_ml"] == 0 for h in curve["history"])
    assert curve["sharing_writes_this_run"] == {"llm": 0, "drs": 0}
    stage(monkeypatch, evaluate_joint, "tiny", "wo_et")
    m = json.loads((tmp_path / "data/metrics/joint/tiny/wo_et.json").read_text())
    assert m["vocab"] == "text" and "HR@1" in m["drs"]["topk"]


def test_stage_errors_leave_no_artifact(tmp_path, monkeypatch):
    from stages import joint_train

    make_project(tmp_path, vocab_items=I + 1)  # the LLM's vocab.json disagrees with the domain config
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="vocab/pe/vocab.json.*lightgcn/config.json"):
        stage(monkeypatch, joint_train, "tiny", "bdlm")
    # a bad entry anywhere in params.yaml stops every stage (pipeline/config/sections.py validates the
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
