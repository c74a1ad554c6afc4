"""Collaborative and static domain models: planted patterns, export, the training loop."""
from __future__ import annotations

import logging
import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.eval import metrics
from pipeline.models.collaborative import GMF, MF, LightGCN, MFRating, NeuMF
from pipeline.models.registry import MODELS, model_class
from pipeline.models.static import ItemKNN, MostPop
from pipeline.models.trainer import TrainConfig, build_model, fit
from tests.helpers import planted


def heldout_hr(model, data, held, k=5) -> float:
    users = np.array(sorted(held))
    known = metrics.known_items(data.n_users, data.n_items, pa.table({"uid": data.uids, "iid": data.iids}))
    with torch.no_grad():
        return metrics.retrieval_metrics(lambda u: model.score_all(torch.from_numpy(u)).numpy(), users,
                                         np.array([held[u] for u in users]), known, ks=(k,))[f"Recall@{k}"]


@pytest.mark.parametrize("cls,cfg,lr", [
    (MF, {"dim": 16, "batch_size": 64}, 0.02),
    (LightGCN, {"dim": 16, "batch_size": 64, "n_layers": 2}, 0.02),
    (GMF, {"dim": 16, "batch_size": 128}, 0.02),
    (NeuMF, {"dim": 16, "batch_size": 128}, 0.01),
])
def test_models_learn_a_planted_pattern(cls, cfg, lr):
    data, held = planted()
    model = cls(data.n_users, data.n_items, cfg)
    fit(model, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=25, lr=lr, patience=25, seed=1))
    # random ranking of the 32 unseen items would give 5/32 = 0.16
    assert heldout_hr(model, data, held) >= 0.5


def test_static_models_learn_the_pattern():
    data, held = planted()
    knn = ItemKNN(data.n_users, data.n_items, {"neighbors": 20})
    knn.build(data)
    assert heldout_hr(knn, data, held) >= 0.5
    pop = MostPop(data.n_users, data.n_items, {})
    pop.build(data)
    assert torch.equal(pop.score_all(torch.tensor([0]))[0], torch.from_numpy(data.item_counts()).float())


def test_rating_regressor_beats_the_mean():
    data, _ = planted(per_user=9)
    model = MFRating(data.n_users, data.n_items, {"dim": 8, "batch_size": 64, "reg": 0.0})
    fit(model, data, lambda m: -float(((m.predict(torch.from_numpy(data.uids), torch.from_numpy(data.iids))
                                        .detach().numpy() - data.ratings) ** 2).mean()),
        TrainConfig(epochs=30, lr=0.02, patience=30))
    pred = model.predict(torch.from_numpy(data.uids), torch.from_numpy(data.iids)).detach().numpy()
    rmse = metrics.rating_metrics(pred, data.ratings)["RMSE"]
    assert rmse < 0.5 * data.ratings.std()


def test_training_is_seeded(caplog):
    data, held = planted()
    runs = []
    for _ in range(2):
        caplog.clear()
        model = build_model(MF, data.n_users, data.n_items, {"dim": 8, "batch_size": 64}, seed=4)
        torch.manual_seed(123)  # fit seeds again from its config; this must not matter
        with caplog.at_level(logging.INFO, logger="pipeline.models.trainer"):
            fit(model, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=3, lr=0.01, seed=4))
        logs = [r.getMessage() for r in caplog.records if r.name == "pipeline.models.trainer"]
        assert len(logs) == 3, logs  # one line per epoch
        runs.append((model.user.weight.detach().clone(), [l.split(",")[0] for l in logs]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_multithreaded_training_is_bitwise_repeatable():
    """Big enough for torch's parallel kernels (2 threads, batches of 2048 x 64): without
    deterministic algorithms LightGCN's weights differ run to run."""
    data, held = planted(n_users=600, n_items=400, groups=4, per_user=30)
    cfg = TrainConfig(epochs=2, lr=0.01, seed=4, threads=2, patience=5)
    weights = []
    for _ in range(2):
        model = build_model(LightGCN, data.n_users, data.n_items, {"dim": 64, "batch_size": 2048, "n_layers": 2}, 4)
        epochs = iter(range(10))  # a rising "valid metric": the last epoch's weights are kept
        fit(model, data, lambda m: float(next(epochs)), cfg)
        weights.append(torch.cat([model.user.weight, model.item.weight]).detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.are_deterministic_algorithms_enabled()  # fit restores the global setting


def test_bpr_batches_never_use_a_held_out_item():
    data, held = planted()
    model = LightGCN(data.n_users, data.n_items, {"dim": 8, "batch_size": 50})
    train_pairs = set(zip(data.uids.tolist(), data.iids.tolist()))
    for batch in model.batches(data, np.random.default_rng(0)):
        for u, p, n in zip(batch["user"].tolist(), batch["pos"].tolist(), batch["neg"].tolist()):
            assert (u, p) in train_pairs and (u, n) not in train_pairs
            assert p != held[u]
    # the graph holds train edges only
    adj = model.adj.to_sparse_coo().coalesce().indices().numpy()
    edges = {(int(a), int(b) - data.n_users) for a, b in adj.T if a < data.n_users}
    assert edges == train_pairs


def test_exported_tables_match_the_model():
    data, _ = planted()
    lg = LightGCN(data.n_users, data.n_items, {"dim": 8, "n_layers": 2})
    lg.set_graph(data)
    lg.eval()
    u, i = lg.tables()
    assert u.shape == (data.n_users, 8) and i.shape == (data.n_items, 8)
    np.testing.assert_allclose((u @ i.T).numpy(), lg.score_all(torch.arange(data.n_users)).numpy(), rtol=1e-5)
    ncf = NeuMF(data.n_users, data.n_items, {"dim": 8})
    assert ncf.tables()[0].shape == (data.n_users, 16)


def test_unknown_model_is_named():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="unknown domain model 'lgcn'"):
        model_class("lgcn")
    assert {"lightgcn", "ncf", "gmf", "mf", "mostpop", "itemknn", "mf_rating"} <= set(MODELS)


def test_scores_on_a_user_subset_are_the_scores_of_sets_holding_only_those_users():
    """EvalSets.restrict (the LLM rows' users) = evaluation sets built from those users' rows
    alone; train stays whole (what the models condition on)."""
    from pipeline.eval.evaluator import EvalSets, evaluate, user_subset

    data, held = planted(n_users=40, n_items=40)
    train = pa.table({"uid": pa.array(data.uids, pa.int32()), "iid": pa.array(data.iids, pa.int32()),
                      "timestamp": pa.array(np.arange(len(data.uids)), pa.int64()),
                      "raw_row": pa.array(np.arange(len(data.uids)), pa.int64())})

    def sets(users):
        users = np.asarray(users)
        held_out = pa.table({"uid": pa.array(users, pa.int32()), "iid": pa.array([held[u] for u in users], pa.int32()),
                             "timestamp": pa.array(np.full(len(users), 10 ** 6), pa.int64()),
                             "raw_row": pa.array(10 ** 6 + users, pa.int64())})
        cands = pa.table({"uid": pa.array(users, pa.int32()),
                          "candidates": [[held[u], (held[u] + 1) % 40, (held[u] + 17) % 40] for u in users],
                          "label_index": pa.array([0] * len(users), pa.int32())})
        binary = pa.table({"uid": pa.array(np.repeat(users, 2), pa.int32()),
                           "iid": pa.array([i for u in users for i in (held[u], (held[u] + 17) % 40)], pa.int32()),
                           "label": pa.array([1, 0] * len(users), pa.int8())})
        return EvalSets(40, 40, {"train": train, "valid": held_out, "test": held_out},
                        {f"{s}_{p}": t for s in ("valid", "test") for p, t in
                         (("topk", cands), ("ranking", cands), ("binary", binary))})

    ev = sets(range(40))
    some = user_subset(ev.splits["test"], 10, seed=3)
    assert len(some) == 10 and np.array_equal(some, user_subset(ev.splits["test"], 10, seed=3))
    assert np.array_equal(user_subset(ev.splits["test"], None, seed=3), np.arange(40))
    sub = ev.restrict(some)
    assert sub.splits["train"] is ev.splits["train"]
    model = build_model(MF, 40, 40, {"dim": 8, "batch_size": 64}, seed=1)
    fit(model, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=3, lr=0.02, seed=1))
    assert evaluate(model, sub) == evaluate(model, sets(some))
    assert evaluate(model, sub) != evaluate(model, ev)


def test_training_progress_shows_in_a_log(monkeypatch, capfd):
    """Off a terminal (a log file, CI), fit logs flushed step and epoch lines to stderr (the stage
    scripts' logging set-up), not a bar."""
    from pipeline import progress
    monkeypatch.setattr(progress, "EVERY", 0.0)  # a line per step
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    progress.setup_logging()  # what cli.run does for every stage
    data, _ = planted()
    model = MF(data.n_users, data.n_items, {"dim": 8, "batch_size": 128})
    fit(model, data, lambda m: 0.0, TrainConfig(epochs=2, patience=5, seed=1))
    out, err = capfd.readouterr()
    assert "[mf] epoch 1: loss" in err and "[mf] epoch 2: loss" in err
    steps = [line for line in err.splitlines() if line.startswith("[mf epoch 1] ")]
    assert len(steps) >= 2 and steps[0].startswith("[mf epoch 1] step 1,") and "\r" not in err


# --- mixed precision (domain.train.mixed_precision, pipeline.precision) ----------------

@pytest.mark.parametrize("cls,cfg", [
    (LightGCN, {"dim": 16, "batch_size": 64, "n_layers": 2}),  # sparse propagation stays float32
    (MF, {"dim": 16, "batch_size": 64}),
])
def test_bf16_training_runs_and_keeps_float32_weights(cls, cfg):
    data, held = planted()
    model = build_model(cls, data.n_users, data.n_items, cfg, 1)
    history = fit(model, data, lambda m: heldout_hr(m, data, held),
                  TrainConfig(epochs=15, lr=0.02, patience=15, seed=1, mixed_precision="bf16"))
    assert {r["precision"] for r in history} == {"bf16"}
    assert all(np.isfinite(r["loss"]) for r in history) and history[-1]["loss"] < history[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert heldout_hr(model, data, held) >= 0.4  # random: 5/32


def test_sequential_bf16_training_autocasts():
    from pipeline.models.sequential import SASRec

    data, held = planted()
    model = build_model(SASRec, data.n_users, data.n_items,
                        {"dim": 16, "n_layers": 1, "n_heads": 2, "max_len": 8, "batch_size": 16}, 1)
    seen = []
    model.item_emb.register_forward_hook(lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu")))
    history = fit(model, data, lambda m: 0.0, TrainConfig(epochs=2, lr=0.01, patience=5, mixed_precision="bf16"))
    assert seen and all(seen) and all(np.isfinite(r["loss"]) for r in history)
    seen.clear()
    fit(model, data, lambda m: 0.0, TrainConfig(epochs=1, lr=0.01, patience=5))
    assert seen and not any(seen)  # the default: float32


def test_mixed_precision_param_is_checked_and_auto_resolves():
    from pipeline.errors import PipelineError
    from pipeline.precision import native_bf16
    from pipeline.models.trainer import domain_configs

    base = {"domain": {"train": {"epochs": 1, "lr": 0.01, "weight_decay": 0.0, "patience": 1, "eval_every": 1,
                                 "seed": 0}, "mf": {"dim": 8}}}
    assert domain_configs(base, "mf")[1].mixed_precision == "no"  # absent: float32
    base["domain"]["mf"]["mixed_precision"] = "bf16"
    assert domain_configs(base, "mf")[1].mixed_precision == "bf16"
    base["domain"]["mf"]["mixed_precision"] = "fp16"
    with pytest.raises(PipelineError, match=r"domain\.mf\.mixed_precision must be one of \['auto', 'no', 'bf16'\], "
                                            r"got 'fp16'"):
        domain_configs(base, "mf")
    data, _ = planted()
    model = build_model(MF, data.n_users, data.n_items, {"dim": 8, "batch_size": 64}, 1)
    history = fit(model, data, lambda m: 0.0, TrainConfig(epochs=1, mixed_precision="auto"))
    assert history[0]["precision"] == ("bf16" if native_bf16("cpu") else "no")


def test_lightgcn_propagation_matches_the_per_layer_graph():
    """The fused propagation (one autograd node, int32 CSR) against the textbook form: K sparse
    matmuls, a stack and a mean, differentiated by autograd -- same tables and same gradient."""
    data, _ = planted(n_users=50, n_items=30, per_user=6)
    model = build_model(LightGCN, data.n_users, data.n_items, {"dim": 8, "n_layers": 3}, 0)
    model.set_graph(data)
    assert model.adj.crow_indices().dtype == torch.int32
    model.train()
    g = torch.randn(data.n_users + data.n_items, 8, generator=torch.Generator().manual_seed(0))
    u, i = model.final_tables()
    (torch.cat([u, i]) * g).sum().backward()
    fused = [p.grad.clone() for p in (model.user.weight, model.item.weight)]
    model.zero_grad()
    dense = model.adj.to_dense()
    x = torch.cat([model.user.weight, model.item.weight])
    layers = [x]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    reference = torch.stack(layers).mean(0)
    (reference * g).sum().backward()
    torch.testing.assert_close(torch.cat([u, i]), reference, rtol=1e-5, atol=1e-6)
    for a, b in zip(fused, (model.user.weight.grad, model.item.weight.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lightgcn_column_blocks_change_nothing(monkeypatch):
    """Propagating in column blocks (a cache-sized working set) gives the same tables and
    gradients as the whole table at once, to float32 rounding: bitwise on the AVX512 machine the
    blocks were measured on, one ulp apart on an AVX2 CPU, where the sparse kernel's vector width
    changes the order of the per-row sums with the block width."""
    from pipeline.models import collaborative

    data, _ = planted(n_users=50, n_items=30, per_user=6)
    results = []
    for block_bytes in (1 << 60, 50 * 16 * 4):  # whole; blocks of 16 of the 64 columns
        monkeypatch.setattr(collaborative, "BLOCK_BYTES", block_bytes)
        assert len(collaborative._column_blocks(torch.zeros(80, 64))) == (1 if block_bytes > 1e9 else 4)
        model = build_model(LightGCN, data.n_users, data.n_items, {"dim": 64, "n_layers": 3}, 0)
        model.set_graph(data)
        model.train()
        u, i = model.final_tables()
        (u.sum() + i.pow(2).sum()).backward()
        results.append((u.detach(), i.detach(), model.user.weight.grad, model.item.weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_bpr_init_is_normal_by_default_and_xavier_on_request():
    """init: normal (the default when absent; MF's) keeps N(0, 0.1^2); xavier (LightGCN's default
    in params.yaml, as its paper and RecBole) draws Xavier-uniform tables; the planted pattern
    is learned either way."""
    from pipeline.config.sections import validate_params
    from pipeline.errors import PipelineError

    data, held = planted()
    cfg = {"dim": 16, "batch_size": 64, "n_layers": 2}
    default = build_model(LightGCN, data.n_users, data.n_items, cfg, 1)
    normal = build_model(LightGCN, data.n_users, data.n_items, {**cfg, "init": "normal"}, 1)
    assert torch.equal(default.user.weight, normal.user.weight)
    assert 0.08 < float(default.user.weight.detach().std()) < 0.12
    xavier = build_model(LightGCN, data.n_users, data.n_items, {**cfg, "init": "xavier"}, 1)
    for table in (xavier.user.weight, xavier.item.weight):
        bound = (6 / sum(table.shape)) ** 0.5
        assert float(table.detach().abs().max()) <= bound and float(table.detach().abs().max()) > 0.9 * bound
    fit(xavier, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=25, lr=0.02, patience=25, seed=1))
    assert heldout_hr(xavier, data, held) >= 0.5
    with pytest.raises(ValueError, match="init must be 'normal' or 'xavier', got 'he'"):
        build_model(MF, data.n_users, data.n_items, {"dim": 8, "init": "he"}, 1)
    with pytest.raises(PipelineError, match=r"domain\.lightgcn\.init"):
        validate_params({"domain": {"lightgcn": {"init": "he"}}}, "params.yaml")


def test_valid_k_and_threads_reach_the_trainer(monkeypatch):
    """domain.<model>.valid_k overrides domain.train's (LightGCN stops on NDCG@20); threads is
    torch's thread count while training, and null leaves torch's default alone."""
    from pipeline.models.trainer import domain_configs

    params = {"domain": {"train": {"epochs": 2, "lr": 0.01, "weight_decay": 0.0, "patience": 1, "eval_every": 1,
                                   "seed": 0, "valid_k": 10, "threads": None},
                         "lightgcn": {"dim": 8, "valid_k": 20, "threads": 1}, "mf": {"dim": 8}}}
    model_cfg, train = domain_configs(params, "lightgcn")
    assert (train.valid_k, train.threads) == (20, 1) and "valid_k" not in model_cfg
    assert domain_configs(params, "mf")[1].valid_k == 10 and domain_configs(params, "mf")[1].threads is None

    data, held = planted()
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    model = build_model(MF, data.n_users, data.n_items, {"dim": 8}, 0)
    fit(model, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=1, threads=1))
    fit(model, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=1, threads=None))
    assert calls == [1]


def test_valid_score_is_ndcg_at_the_requested_cutoff():
    """valid_score(k) is the valid split's NDCG@k over all items; at k=1 that is the share of
    users whose top unseen item is their held-out one."""
    from pipeline.eval.evaluator import EvalSets, retrieval, valid_score

    data, held = planted(n_users=40, n_items=40)
    train = pa.table({"uid": pa.array(data.uids, pa.int32()), "iid": pa.array(data.iids, pa.int32()),
                      "timestamp": pa.array(np.arange(len(data.uids)), pa.int64()),
                      "raw_row": pa.array(np.arange(len(data.uids)), pa.int64())})
    valid = pa.table({"uid": pa.array(np.arange(40), pa.int32()), "iid": pa.array([held[u] for u in range(40)], pa.int32()),
                      "timestamp": pa.array(np.full(40, 10 ** 6), pa.int64()),
                      "raw_row": pa.array(10 ** 6 + np.arange(40), pa.int64())})
    ev = EvalSets(40, 40, {"train": train, "valid": valid, "test": valid}, {})
    model = build_model(MF, 40, 40, {"dim": 8, "batch_size": 64}, seed=1)
    fit(model, data, lambda m: heldout_hr(m, data, held), TrainConfig(epochs=3, lr=0.02, seed=1))
    scores = (model.user.weight @ model.item.weight.T).detach().numpy()
    scores[data.uids, data.iids] = -np.inf
    top1 = float(np.mean(scores.argmax(1) == np.array([held[u] for u in range(40)])))
    assert valid_score(model, ev, 1) == pytest.approx(top1)
    assert valid_score(model, ev, 20) == pytest.approx(retrieval(model, ev, "valid", ks=(20,))["NDCG@20"])
    assert valid_score(model, ev) == pytest.approx(retrieval(model, ev, "valid", ks=(10,))["NDCG@10"])
