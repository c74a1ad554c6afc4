"""SASRec, GRU4Rec and BERT4Rec: they learn a planted next-item pattern, they follow the
DomainModel interface, they are repeatable, and their batches only hold the user's own
train items."""
from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.eval.metrics import known_items, retrieval_metrics
from pipeline.models.data import Interactions
from pipeline.models.sequential import BERT4Rec, GRU4Rec, SASRec, sampled_softmax

N_USERS, N_ITEMS = 60, 30
TINY = {"dim": 16, "n_layers": 1, "n_heads": 2, "max_len": 10, "dropout": 0.1, "batch_size": 16}
SAMPLED = {"loss": "sampled", "n_sampled": 12, "sampled_alpha": 0.5}
MODELS = [pytest.param(SASRec, {"loss": "ce"}, id="sasrec-ce"),
          pytest.param(SASRec, {"loss": "bce"}, id="sasrec-bce"),
          pytest.param(SASRec, SAMPLED, id="sasrec-sampled"),
          pytest.param(GRU4Rec, {}, id="gru4rec"),
          pytest.param(GRU4Rec, SAMPLED, id="gru4rec-sampled"),
          pytest.param(BERT4Rec, {"mask_prob": 0.3}, id="bert4rec"),
          pytest.param(BERT4Rec, {"mask_prob": 0.3, **SAMPLED}, id="bert4rec-sampled")]


def walk_log(seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """Each user walks i, i+1, i+2, ... (mod N_ITEMS) from a random start, 3 to 15 train
    items (so some are padded and some truncated); the held-out target is the next step.
    Rows are shuffled so that only the timestamps give the order."""
    rng = np.random.default_rng(seed)
    uid, iid, ts, targets = [], [], [], np.empty(N_USERS, dtype=np.int64)
    for u in range(N_USERS):
        start, n = rng.integers(N_ITEMS), rng.integers(3, 16)
        uid += [u] * n
        iid += [(start + k) % N_ITEMS for k in range(n)]
        ts += [1000 * u + 10 * k for k in range(n)]
        targets[u] = (start + n) % N_ITEMS
    order = rng.permutation(len(uid))
    table = pa.table({"uid": np.array(uid)[order], "iid": np.array(iid)[order],
                      "rating": np.ones(len(uid), dtype=np.float32),
                      "timestamp": np.array(ts)[order], "raw_row": order})
    return table, targets


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add sync overhead (milliseconds per op on a
    busy 2-core machine), so run these tests single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def walk():
    table, targets = walk_log()
    return table, Interactions.from_table(table, N_USERS, N_ITEMS), targets


def fit(cls, cfg: dict, data: Interactions, epochs: int, seed: int = 0):
    torch.manual_seed(seed)  # weights and dropout
    rng = np.random.default_rng(seed)  # order, negatives, masks
    model = cls(data.n_users, data.n_items, {**TINY, **cfg})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(epochs):
        for batch in model.batches(data, rng):
            opt.zero_grad()
            loss = model.loss(batch)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    return model, losses


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_learns_planted_walk(walk, cls, cfg):
    table, data, targets = walk
    t0 = time.perf_counter()
    model, losses = fit(cls, cfg, data, epochs=30)
    model.set_history(torch.from_numpy(data.last_items(15)))  # the full train sequence

    def score(u):
        with torch.no_grad():
            return model.score_all(torch.from_numpy(u)).numpy()

    users = np.arange(N_USERS)
    m = retrieval_metrics(score, users, targets, known_items(N_USERS, N_ITEMS, table), ks=(3,))
    print(f"{cls.name} {cfg}: Recall@3={m['Recall@3']:.2f} loss {losses[0]:.3f}->{losses[-1]:.3f} "
          f"in {time.perf_counter() - t0:.1f}s")
    assert losses[-1] < losses[0]
    assert m["Recall@3"] >= 0.6  # random is 3/30 = 0.1


def random_log(seed: int = 1) -> pa.Table:
    """Random items at random times, rows shuffled; user 0 has one item, user 1 none."""
    rng = np.random.default_rng(seed)
    uid, iid = [0], [int(rng.integers(N_ITEMS))]
    for u in range(2, N_USERS):
        n = int(rng.integers(2, 25))  # some longer than max_len + 1
        uid += [u] * n
        iid += rng.choice(N_ITEMS, n, replace=False).tolist()
    n = len(uid)
    return pa.table({"uid": np.array(uid), "iid": np.array(iid), "rating": np.ones(n, dtype=np.float32),
                     "timestamp": rng.integers(0, 10**6, n), "raw_row": np.arange(n)})


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_batches_hold_only_the_users_own_train_items(cls, cfg):
    data = Interactions.from_table(random_log(), N_USERS, N_ITEMS)
    model = cls(N_USERS, N_ITEMS, {**TINY, **cfg})
    max_len, seen_users = TINY["max_len"], []
    for batch in model.batches(data, np.random.default_rng(0)):
        assert len(batch["users"]) <= TINY["batch_size"]
        inputs, targets = batch["inputs"].numpy(), batch["targets"].numpy()
        # padded to the batch's longest sequence only: its first column holds a real item
        span = max_len if cls is BERT4Rec else max_len + 1
        longest = min(span, max(len(data.sequence(u)) for u in batch["users"].tolist()))
        width = longest if cls is BERT4Rec else longest - 1
        assert inputs.shape == targets.shape == (len(batch["users"]), width)
        for row, u in enumerate(batch["users"].tolist()):
            seen_users.append(u)
            own = set(data.sequence(u).tolist())
            for ids in (inputs[row], targets[row]):
                assert set(ids[(ids >= 0) & (ids < N_ITEMS)].tolist()) <= own, f"user {u} got others' items"
            if cls is BERT4Rec:
                masked = inputs[row] == N_ITEMS
                assert masked.any() and (targets[row][~masked] == -1).all()
                # the unmasked inputs and the targets rebuild the newest max_len items in order
                rebuilt = np.where(masked, targets[row], inputs[row])
                np.testing.assert_array_equal(rebuilt[rebuilt >= 0], data.sequence(u)[-max_len:])
            else:
                # targets are the inputs shifted by one: the newest max_len + 1 items in time order
                seq = data.sequence(u)[-max_len - 1:]
                np.testing.assert_array_equal(inputs[row][inputs[row] >= 0], seq[:-1])
                np.testing.assert_array_equal(targets[row][targets[row] >= 0], seq[1:])
                assert ((targets[row] >= 0) == (inputs[row] >= 0)).all()
            if "negatives" in batch:
                negs, valid = batch["negatives"].numpy()[row], targets[row] >= 0
                assert (negs[valid] != targets[row][valid]).all() and (negs[~valid] == -1).all()
                assert ((negs >= -1) & (negs < N_ITEMS)).all()
    # every user with enough items, exactly once per epoch
    lengths = np.diff(data.offsets)
    assert sorted(seen_users) == np.flatnonzero(lengths >= model.min_train_len).tolist()
    assert 1 not in seen_users  # no train items
    assert (0 in seen_users) == (cls is BERT4Rec)  # one item: a cloze target, but no next-item pair


def test_sasrec_bce_negatives_avoid_the_users_train_items():
    data = Interactions.from_table(random_log(), N_USERS, N_ITEMS)
    model = SASRec(N_USERS, N_ITEMS, {**TINY, "loss": "bce"})
    hits = total = 0
    for batch in model.batches(data, np.random.default_rng(0)):
        for row, u in enumerate(batch["users"].tolist()):
            negs = batch["negatives"].numpy()[row]
            negs = negs[negs >= 0]
            hits += np.isin(negs, data.sequence(u)).sum()
            total += len(negs)
    assert total > 0 and hits == 0  # users here see up to 24 of the 30 items

    # a user who has seen every item still gets negatives that differ from the target
    everything = pa.table({"uid": np.zeros(N_ITEMS, dtype=np.int64), "iid": np.arange(N_ITEMS),
                           "timestamp": np.arange(N_ITEMS), "raw_row": np.arange(N_ITEMS)})
    batch, = model.batches(Interactions.from_table(everything, 1, N_ITEMS), np.random.default_rng(0))
    valid = batch["targets"] >= 0
    assert valid.sum() == TINY["max_len"] and (batch["negatives"][valid] != batch["targets"][valid]).all()


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_same_seed_same_losses(walk, cls, cfg):
    _, data, _ = walk
    a, losses_a = fit(cls, cfg, data, epochs=3, seed=7)
    b, losses_b = fit(cls, cfg, data, epochs=3, seed=7)
    assert losses_a == losses_b  # bitwise
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert fit(cls, cfg, data, epochs=3, seed=8)[1] != losses_a


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_interface(walk, cls, cfg):
    _, data, _ = walk
    torch.manual_seed(0)
    model = cls(N_USERS, N_ITEMS, {**TINY, **cfg}).eval()
    users = torch.tensor([3, 0, 17, 59])
    with pytest.raises(RuntimeError, match="set_history"):
        model.score_all(users)
    with pytest.raises(RuntimeError, match="set_history"):
        model.tables()
    with pytest.raises(ValueError):
        model.set_history(torch.full((N_USERS - 1, 5), -1))

    history = torch.from_numpy(data.last_items(15))
    history[5] = -1  # a user with no history at all still gets finite scores
    model.set_history(history)
    with torch.no_grad():
        scores = model.score_all(users)
        assert scores.shape == (4, N_ITEMS) and torch.isfinite(model.score_all(torch.arange(N_USERS))).all()
        items = torch.randint(0, N_ITEMS, (4, 7))
        torch.testing.assert_close(model.score(users, items), torch.gather(scores, 1, items), rtol=0, atol=0)

        user_table, item_table = model.tables()
        assert user_table.shape == (N_USERS, TINY["dim"]) and item_table.shape == (N_ITEMS, TINY["dim"])
        assert user_table.dtype == item_table.dtype == torch.float32 and not user_table.requires_grad
        torch.testing.assert_close(user_table[users] @ item_table.T, scores)

        # only the most recent max_len items count; a shorter history is padded
        model.set_history(history[:, -TINY["max_len"]:])
        torch.testing.assert_close(model.score_all(users), scores)
        model.set_history(history[:, -4:])
        assert model.history.shape == (N_USERS, TINY["max_len"])
        assert (model.history[:, :-4] == -1).all()

        # with dropout off, train and eval mode agree (torch's eval fast path included)
        off = cls(N_USERS, N_ITEMS, {**TINY, **cfg, "dropout": 0.0})
        off.set_history(history)
        eval_scores = off.eval().score_all(users)
        torch.testing.assert_close(off.train().score_all(users), eval_scores)
        # and with dropout on, eval mode is deterministic
        assert torch.equal(model.eval().score_all(users), model.score_all(users))


def test_sasrec_rejects_unknown_loss():
    with pytest.raises(PipelineError, match=r"domain\.sasrec\.loss = 'bpr' must be one of \['ce', 'sampled', 'bce'\]"):
        SASRec(N_USERS, N_ITEMS, {**TINY, "loss": "bpr"})
    with pytest.raises(PipelineError, match=r"domain\.gru4rec\.loss = 'bce' must be one of \['ce', 'sampled'\]"):
        GRU4Rec(N_USERS, N_ITEMS, {**TINY, "loss": "bce"})


def widths(model, data, seed=0) -> list[int]:
    return [b["inputs"].shape[1] for b in model.batches(data, np.random.default_rng(seed))]


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_padding_free_batches_give_the_padded_loss(cls, cfg):
    """The same users, negatives and masks padded to max_len or to the batch's longest
    sequence: same loss and same gradients (dropout 0) -- attention ignores pads, the GRU
    never sees them, and learned positions count from the right. Positions are scaled up so
    that counting them from the left instead would show."""
    data = Interactions.from_table(random_log(), N_USERS, N_ITEMS)
    torch.manual_seed(0)
    model = cls(N_USERS, N_ITEMS, {**TINY, **cfg, "dropout": 0.0, "bucket": 4})
    if hasattr(model, "pos_emb"):
        torch.nn.init.normal_(model.pos_emb.weight, std=1.0)
    narrow = list(model.batches(data, np.random.default_rng(3)))
    model.full_width = True
    wide = list(model.batches(data, np.random.default_rng(3)))
    assert len(narrow) == len(wide) and any(b["inputs"].shape[1] < TINY["max_len"] for b in narrow)
    for a, b in zip(narrow, wide):
        w = a["inputs"].shape[1]
        assert torch.equal(a["users"], b["users"])
        for key in a.keys() - {"users"}:  # the narrow batch is the wide one's last columns
            if a[key].dim() == 1:  # the sampled softmax's shared negatives and log_q table
                assert torch.equal(a[key], b[key])
                continue
            assert torch.equal(a[key], b[key][:, -w:]) and (b[key][:, :-w] == -1).all()
        for train in (False, True):
            model.train(train)
            losses, grads = [], []
            for batch in (a, b):
                model.zero_grad()
                loss = model.loss(batch)
                loss.backward()
                losses.append(loss.detach())
                grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
            torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
            for g_narrow, g_wide in zip(*grads):
                torch.testing.assert_close(g_narrow, g_wide, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_padding_free_scoring_equals_padded(walk, cls, cfg):
    _, data, _ = walk
    torch.manual_seed(0)
    model = cls(N_USERS, N_ITEMS, {**TINY, **cfg, "batch_size": 8}).eval()
    if hasattr(model, "pos_emb"):
        torch.nn.init.normal_(model.pos_emb.weight, std=1.0)
    history = torch.from_numpy(data.last_items(15))
    history[5] = -1  # no history at all
    history[7, :-1] = -1  # a single item
    model.set_history(history)
    users = torch.tensor([7, 3, 0, 5, 17, 59, 12, 40, 41, 42, 43, 44, 2])
    with torch.no_grad():
        narrow, (narrow_users, narrow_items) = model.score_all(users), model.tables()
        model.full_width = True
        wide, (wide_users, wide_items) = model.score_all(users), model.tables()
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(narrow_users, wide_users, rtol=1e-5, atol=1e-5)
    assert torch.equal(narrow_items, wide_items)


@pytest.mark.parametrize("cls,cfg", MODELS)
def test_bucketing_is_seeded_and_narrows_batches(cls, cfg):
    data = Interactions.from_table(random_log(), N_USERS, N_ITEMS)
    model = cls(N_USERS, N_ITEMS, {**TINY, **cfg, "batch_size": 4, "bucket": 4})

    def users(seed):
        return [b["users"].tolist() for b in model.batches(data, np.random.default_rng(seed))]

    assert users(5) == users(5) and users(5) != users(6)
    assert sorted(sum(users(5), [])) == sorted(sum(users(6), []))  # every user once either way
    bucketed = sum(widths(model, data))
    model.bucket = 1  # plain shuffled batches, padded to their longest
    assert bucketed < sum(widths(model, data))
    model.full_width = True
    assert set(widths(model, data)) == {TINY["max_len"]}


@pytest.mark.parametrize("key", ["max_len", "bucket", "batch_size"])
@pytest.mark.parametrize("cls", [SASRec, GRU4Rec, BERT4Rec])
def test_bad_sizes_name_the_param(cls, key):
    for bad in (0, -1, 2.5, "8", True):
        with pytest.raises(PipelineError, match=rf"domain\.{cls.name}\.{key}' must be an integer >= 1, got {bad!r}"):
            cls(N_USERS, N_ITEMS, {**TINY, key: bad})


# --- the sampled softmax ---------------------------------------------------------------------

def test_sampled_softmax_by_hand():
    """Two positions, three shared negatives (one an accidental hit of the first row's target),
    checked against the formula written out: logit - log Q, the positive's too."""
    states = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    table = torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.0, 3.0], [-1.0, 0.5]])
    targets = torch.tensor([0, 2])
    sampled = torch.tensor([1, 0, 3])
    log_q = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]) * 3)  # expected counts among 3 draws
    lq = log_q.tolist()
    # row 0: target 0 (score 1), negatives 1 (score 2) and 3 (score -1); sampled 0 is its own target
    pos0, negs0 = 1.0 - lq[0], [2.0 - lq[1], -1.0 - lq[3]]
    # row 1: target 2 (score 6), negatives 1 (score -1), 0 (score 2.5), 3 (score 0.5)
    pos1, negs1 = 6.0 - lq[2], [-1.0 - lq[1], 2.5 - lq[0], 0.5 - lq[3]]

    def ce(pos, negs):
        return -pos + math.log(sum(math.exp(x) for x in [pos, *negs]))

    expected = (ce(pos0, negs0) + ce(pos1, negs1)) / 2
    got = sampled_softmax(states, table, targets, sampled, log_q)
    assert abs(got.item() - expected) < 1e-5
    # without the correction the loss is a different number: the correction is applied
    uncorrected = sampled_softmax(states, table, targets, sampled, torch.zeros(4))
    assert abs(uncorrected.item() - expected) > 1e-2


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec, BERT4Rec])
def test_sampled_loss_is_finite_decreases_and_repeats(walk, cls):
    _, data, _ = walk
    cfg = {**SAMPLED, "n_sampled": 8}
    model, losses = fit(cls, cfg, data, epochs=20, seed=3)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.1
    assert fit(cls, cfg, data, epochs=20, seed=3)[1] == losses  # bitwise, same seed
    # full scoring whatever the training loss
    model.set_history(torch.from_numpy(data.last_items(15)))
    with torch.no_grad():
        assert model.score_all(torch.arange(4)).shape == (4, N_ITEMS)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_sampled_negatives_follow_popularity_to_the_alpha(alpha):
    """Shared by the batch, n_sampled of them, drawn with weight (count + 1) ** alpha; the
    batch's log_q is log(n_sampled * that probability)."""
    data = Interactions.from_table(random_log(), N_USERS, N_ITEMS)
    model = SASRec(N_USERS, N_ITEMS, {**TINY, **SAMPLED, "sampled_alpha": alpha})
    w = (data.item_counts() + 1.0) ** alpha
    q = w / w.sum()
    counts, n_batches = np.zeros(N_ITEMS), 0
    rng = np.random.default_rng(0)
    for _ in range(60):
        for batch in model.batches(data, rng):
            assert batch["sampled"].shape == (SAMPLED["n_sampled"],)
            np.testing.assert_allclose(batch["log_q"].numpy(), np.log(SAMPLED["n_sampled"] * q), rtol=1e-5)
            counts += np.bincount(batch["sampled"].numpy(), minlength=N_ITEMS)
            n_batches += 1
    freq = counts / counts.sum()
    assert np.abs(freq - q).max() < 0.02, (freq, q)


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec, BERT4Rec])
def test_sampled_settings_name_the_param(cls):
    with pytest.raises(PipelineError, match=rf"params\.yaml: domain\.{cls.name}\.n_sampled = 30 must be < the "
                                            rf"number of items \(30\)"):
        cls(N_USERS, N_ITEMS, {**TINY, **SAMPLED, "n_sampled": 30})
    with pytest.raises(PipelineError, match=rf"domain\.{cls.name}\.n_sampled' must be an integer >= 1, got 0"):
        cls(N_USERS, N_ITEMS, {**TINY, **SAMPLED, "n_sampled": 0})
    with pytest.raises(PipelineError, match=rf"domain\.{cls.name}\.sampled_alpha = -1 must be a number in \[0, 10\]"):
        cls(N_USERS, N_ITEMS, {**TINY, **SAMPLED, "sampled_alpha": -1})
