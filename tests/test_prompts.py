"""build_prompts: the output contract, leakage, determinism and clear errors."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import PipelineError
from pipeline.llm.tokens import item_text
from pipeline.data.negatives import NegativesConfig, make_all
from pipeline.llm.prompts.build import build_all
from pipeline.llm.prompts.config import PromptsConfig
from pipeline.llm.prompts.inputs import Inputs, load_inputs
from pipeline.llm.prompts.leakage import check_leakage
from pipeline.llm.prompts.schema import SCHEMA, Spec
from tests.helpers import random_log

ITEM_RE = {"tokens": re.compile(r"<iid_(\d+)>"), "text": re.compile(r"\bitem (\d+)\b")}
N_ITEMS = 150


def _titles(n: int) -> list[str]:
    return [f"Title number {i} of the catalogue ({1950 + i % 50})" for i in range(n)]


def synthetic(n_users: int = 40, seed: int = 1, ratings: bool = True) -> Inputs:
    splits = random_log(n_users, N_ITEMS, (5, 25), seed=seed)
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in splits.items():
        n = t.num_rows
        t = t.append_column("rating", pa.array(rng.integers(1, 6, n).astype(np.float32) if ratings
                                               else np.ones(n, np.float32)))
        # random_log lists each user's items in time order: make that explicit
        offset = 1000 * ("train", "valid", "test").index(name)
        t = t.append_column("timestamp", pa.array(np.arange(n, dtype=np.int64) + offset))
        out[name] = t.append_column("raw_row", pa.array(np.arange(n, dtype=np.int64)))
    sets, _ = make_all(out, _titles(N_ITEMS), NegativesConfig(seed=seed, text_fraction=0.0))
    items = pa.table({"iid": pa.array(np.arange(N_ITEMS), pa.int32()), "title": _titles(N_ITEMS),
                      "description": ["" if i % 3 else f"A story about thing {i}" for i in range(N_ITEMS)]})
    return Inputs(out, sets, items)


def cfg(**kw) -> PromptsConfig:
    base = dict(seed=7, history_len=5, title_max_words=4, max_train_users=None, train_targets_per_user=3,
                max_history_chars=None)
    base.update(kw)
    return PromptsConfig(**base)


def per_user(table: pa.Table) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in zip(table["uid"].to_pylist(), table["iid"].to_pylist()):
        out.setdefault(u, set()).add(i)
    return out


def referenced(row: dict, render: str) -> set[int]:
    """Every item a row shows or asks about: columns and every id written in prompt + answer."""
    ids = {row["iid"], *row["candidates"]}
    ids |= {int(x) for x in ITEM_RE[render].findall(row["prompt"] + " " + row["answer"])}
    return ids - {-1}


@pytest.fixture(scope="module")
def built():
    inputs = synthetic()
    tables, metrics = build_all(inputs, cfg(), "ml-tiny")
    return inputs, tables, metrics


# ------------------------------------------------------------------ leakage

def test_train_rows_without_negatives_are_a_function_of_the_train_split_alone():
    """Train negatives avoid every item the user interacted with in any split (as the evaluation
    sets' do), so moving the held-out items may move the negatives; everything else a train row
    shows -- targets, histories, retrieval/rating/MIM rows, positive interaction rows -- must not
    move."""
    import pyarrow.compute as pc

    inputs = synthetic()
    base, _ = build_all(inputs, cfg(), "ml-tiny")
    other = synthetic()
    n_items = other.items.num_rows
    train = per_user(other.splits["train"])
    # every user's valid and test item moved to other items the user never trained on
    for s, shift in (("valid", 1), ("test", 2)):
        t = other.splits[s]
        new = []
        for u, i in zip(t["uid"].to_pylist(), t["iid"].to_pylist()):
            j = (i + shift) % n_items
            while j in train[u] or j == i:
                j = (j + 1) % n_items
            new.append(j)
        other.splits[s] = t.set_column(t.schema.get_field_index("iid"), "iid", pa.array(new, t["iid"].type))
    other.sets, _ = make_all(other.splits, _titles(n_items), NegativesConfig(seed=1, text_fraction=0.0))
    moved, _ = build_all(other, cfg(), "ml-tiny")
    for render in ("tokens", "text"):
        a, b = base[render]["train"], moved[render]["train"]
        keep = lambda t: t.filter(pc.or_(pc.is_in(t["task"], pa.array(["retrieval", "rating", "mim"])),  # noqa: E731
                                         pc.and_(pc.equal(t["task"], "interaction"), pc.equal(t["label"], 1))))
        a, b = keep(a), keep(b)
        assert a.num_rows > 0
        assert a.drop_columns(["rating"]).equals(b.drop_columns(["rating"]))  # NaN != NaN in equals
        np.testing.assert_array_equal(a["rating"].to_numpy(), b["rating"].to_numpy())
        for t in ("topk", "bpr"):  # same targets, whatever the negatives
            pa_, pb_ = (x.filter(pc.equal(x["task"], t)) for x in (base[render]["train"], moved[render]["train"]))
            assert pa_["uid"].equals(pb_["uid"]) and pa_["answer"].equals(pb_["answer"])


@pytest.mark.parametrize("render", ["tokens", "text"])
def test_heldout_items_never_reach_train_rows_nor_test_item_valid_rows(built, render):
    inputs, tables, _ = built
    valid, test, train = (per_user(inputs.splits[s]) for s in ("valid", "test", "train"))
    n_checked = 0
    for row in tables[render]["train"].to_pylist():
        if row["task"] == "mlm":
            assert row["uid"] == -1
            continue
        ids = referenced(row, render)
        # a held-out item never appears in a train row, not even as a negative: negatives are
        # drawn, as the evaluation sets' are, from items the user never interacted with
        assert not ids & (valid[row["uid"]] | test[row["uid"]]), row
        if row["task"] != "topk" and row["task"] != "bpr" and row["label"] != 0:
            assert ids <= train[row["uid"]], row  # history, target, MIM: training items only
        n_checked += 1
    assert n_checked > 100
    for row in tables[render]["valid"].to_pylist():
        assert not referenced(row, render) & test[row["uid"]], row
        hist = ITEM_RE[render].findall(row["prompt"].split(". Predict")[0].split(". How will")[0])
        assert {int(x) for x in hist} <= train[row["uid"]]  # valid conditions on train only
    for row in tables[render]["test"].to_pylist():
        hist = ITEM_RE[render].findall(row["prompt"].split(". Predict")[0].split(". How will")[0])
        assert {int(x) for x in hist} <= train[row["uid"]] | valid[row["uid"]]
        assert not {int(x) for x in hist} & test[row["uid"]]


def test_train_targets_are_the_last_training_items_and_negatives_unseen(built):
    inputs, tables, _ = built
    # negatives are items the user never interacted with in any split
    seen = {(u, i) for sp in ("train", "valid", "test")
            for u, i in zip(inputs.splits[sp]["uid"].to_pylist(), inputs.splits[sp]["iid"].to_pylist())}
    train_seq: dict[int, list[int]] = {}
    for u, i in zip(inputs.splits["train"]["uid"].to_pylist(), inputs.splits["train"]["iid"].to_pylist()):
        train_seq.setdefault(u, []).append(i)
    rows = tables["tokens"]["train"].to_pylist()
    for row in rows:
        if row["task"] == "retrieval":
            assert row["iid"] in train_seq[row["uid"]][-3:]
        if row["task"] == "interaction" and row["label"] == 0:
            assert (row["uid"], row["iid"]) not in seen
        if row["task"] in ("topk", "bpr"):
            positives = [c for c in row["candidates"] if (row["uid"], c) in seen]
            assert positives == [row["iid"]] == [row["candidates"][row["label_index"]]]
    assert sum(r["task"] == "retrieval" for r in rows) == sum(min(3, len(s) - 1) for s in train_seq.values())


def test_leakage_check_raises_on_a_leaked_item():
    spec = Spec("retrieval", uid=3, iid=5, history=[1, 2, 9])
    with pytest.raises(PipelineError, match="leakage.*uid 3"):
        check_leakage({"train": [spec], "valid": [], "test": []}, {3: {9, 11}}, {3: {11}})
    with pytest.raises(PipelineError, match="leakage"):
        check_leakage({"train": [], "valid": [Spec("topk", 3, 5, [1], candidates=[5, 11])], "test": []},
                      {3: {5, 11}}, {3: {11}})
    # a held-out item as a train *negative* is leakage too (top-K candidate, interaction label 0)
    with pytest.raises(PipelineError, match="leakage.*topk.*uid 3"):
        check_leakage({"train": [Spec("topk", 3, 5, [1], candidates=[11, 5], label_index=1)], "valid": [],
                       "test": []}, {3: {11}}, {3: {11}})
    with pytest.raises(PipelineError, match="leakage.*interaction"):
        check_leakage({"train": [Spec("interaction", 3, 11, [1], label=0)], "valid": [], "test": []},
                      {3: {11}}, {3: {11}})


# ------------------------------------------------------------------ contract

def test_schema_tasks_and_columns(built):
    _, tables, _ = built
    expected = {"train": {"interaction", "topk", "retrieval", "rating", "mim", "bpr", "mlm"},
                "valid": {"interaction", "topk", "retrieval", "ranking", "rating"},
                "test": {"interaction", "topk", "retrieval", "ranking", "rating"}}
    for render in ("tokens", "text"):
        for split, table in tables[render].items():
            assert table.schema.equals(SCHEMA)
            assert set(table["task"].to_pylist()) == expected[split]
            for row in table.to_pylist():
                assert row["family"] == ("aux" if row["task"] in ("mim", "bpr", "mlm") else "rec")
                assert row["prompt"].endswith("Answer:") and row["answer"] and row["answer"] == row["answer"].strip()
                t = row["task"]
                n_cands = {"topk": 20, "ranking": 100, "bpr": 2}.get(t, 0)
                assert len(row["candidates"]) == n_cands
                assert (row["label_index"] >= 0) == (n_cands > 0)
                if n_cands:
                    assert row["answer"] == item_text(row["candidates"][row["label_index"]], render == "tokens")
                    assert row["iid"] == row["candidates"][row["label_index"]]
                assert (row["label"] in (0, 1)) == (t == "interaction")
                if t == "interaction":
                    assert row["answer"] == ("Yes" if row["label"] else "No")
                assert math.isnan(row["rating"]) == (t != "rating")
                if t == "rating":
                    assert row["answer"] in "12345" and float(row["answer"]) == row["rating"]
                if t in ("retrieval", "ranking", "mim"):
                    assert row["answer"] == item_text(row["iid"], render == "tokens")
                if t == "mlm":
                    assert "[MASK]" in row["prompt"] and row["uid"] == -1


def test_topk_lists_every_candidate_in_order_and_ranking_lists_none(built):
    _, tables, _ = built
    for render in ("tokens", "text"):
        for row in tables[render]["test"].to_pylist():
            shown = [int(x) for x in ITEM_RE[render].findall(row["prompt"].split("Candidates:")[-1])]
            if row["task"] == "topk":
                assert shown == row["candidates"]
            if row["task"] == "ranking":
                assert "Candidates:" not in row["prompt"]


def test_renders_use_their_own_id_wording(built):
    _, tables, _ = built
    for split in ("train", "valid", "test"):
        tok = tables["tokens"][split]["prompt"].to_pylist() + tables["tokens"][split]["answer"].to_pylist()
        txt = tables["text"][split]["prompt"].to_pylist() + tables["text"][split]["answer"].to_pylist()
        assert not any(re.search(r"\bitem \d|\buser \d", s, re.I) for s in tok)
        assert not any("<iid_" in s or "<uid_" in s for s in txt)
        assert any(s.startswith("User <uid_") for s in tok) and any(re.match(r"User \d+ has", s) for s in txt)
        # both renders hold the same samples
        a, b = tables["tokens"][split], tables["text"][split]
        text = ["prompt", "answer", "rating", "pair_prefix"]
        assert a.drop(text).equals(b.drop(text))
        np.testing.assert_array_equal(a["rating"].to_numpy(), b["rating"].to_numpy())  # NaN == NaN here


def test_interaction_sets_are_balanced(built):
    _, tables, metrics = built
    for split in ("train", "valid", "test"):
        labels = [r["label"] for r in tables["tokens"][split].to_pylist() if r["task"] == "interaction"]
        assert labels and labels.count(1) == labels.count(0)
    assert metrics["counts"]["valid"]["interaction"]["tokens"] == 2 * 40


def test_bdlm_table2_wording(built):
    _, tables, _ = built
    rows = {r["task"]: r for r in tables["tokens"]["valid"].to_pylist()}
    assert re.fullmatch(r"User <uid_\d+> has watched the following movies <iid_\d+> \(.*\)\. "
                        r"Predict if he/she will watch <iid_\d+> \([^)]*\) next\. Answer:",
                        rows["interaction"]["prompt"])
    assert re.fullmatch(r"User <uid_\d+> has watched the following movies .*\. Predict which 1 movie in "
                        r"candidate set will he/she watch most probably\? Candidates: <iid_\d+> .*\. Answer:",
                        rows["topk"]["prompt"])
    assert re.search(r"How will user <uid_\d+> rate <iid_\d+> .*\? Answer with 1-5\. Answer:$", rows["rating"]["prompt"])


def test_mlm_answer_fills_the_masks():
    inputs = synthetic(n_users=10)
    tables, _ = build_all(inputs, cfg(mlm_mask_prob=0.5), "amazon-x")
    titles = inputs.items["title"].to_pylist()
    descs = inputs.items["description"].to_pylist()
    rows = [r for r in tables["text"]["train"].to_pylist() if r["task"] == "mlm"]
    assert len(rows) == N_ITEMS
    for r in rows:
        masked = r["prompt"].split("[MASK]: ", 1)[1].rsplit(" Which words", 1)[0]
        words = iter(r["answer"].split())
        filled = " ".join(next(words) if w == "[MASK]" else w for w in masked.split())
        full = titles[r["iid"]] + (". " + descs[r["iid"]] if descs[r["iid"]] else "")
        assert filled == full
        assert f"item {r['iid']} " in r["prompt"]
    assert "purchased the following products" in tables["text"]["train"]["prompt"][0].as_py()


def test_rating_task_skipped_without_explicit_ratings():
    tables, metrics = build_all(synthetic(n_users=10, ratings=False), cfg(), "ml-tiny")
    assert not metrics["rating_task"]["enabled"] and "implicit" in metrics["rating_task"]["reason"]
    for split in ("train", "valid", "test"):
        assert "rating" not in tables["tokens"][split]["task"].to_pylist()


def test_history_budget_truncates_oldest_first_and_never_candidates():
    inputs = synthetic(n_users=15)
    tables, metrics = build_all(inputs, cfg(history_len=8, max_history_chars=120), "ml-tiny")
    assert metrics["histories_truncated"]["valid"]["tokens"] > 0
    train = {}
    for u, i in zip(inputs.splits["train"]["uid"].to_pylist(), inputs.splits["train"]["iid"].to_pylist()):
        train.setdefault(u, []).append(i)
    for row in tables["tokens"]["valid"].to_pylist():
        hist = [int(x) for x in ITEM_RE["tokens"].findall(row["prompt"].split(". Predict")[0].split(". How will")[0])]
        assert hist == train[row["uid"]][-len(hist):]  # the most recent items are kept
        head = row["prompt"].split(" has watched the following movies ", 1)[1].split(". Predict")[0]
        assert len(hist) == 1 or len(head.split(". How will")[0]) <= 120
        if row["task"] == "topk":
            assert len(ITEM_RE["tokens"].findall(row["prompt"].split("Candidates:")[1])) == 20


def test_max_train_users_caps_a_seeded_subset():
    inputs = synthetic(n_users=30)
    a, _ = build_all(inputs, cfg(max_train_users=7), "ml-tiny")
    b, _ = build_all(inputs, cfg(max_train_users=7, seed=8), "ml-tiny")
    users = lambda t: set(t["tokens"]["train"]["uid"].to_pylist()) - {-1}  # noqa: E731
    assert len(users(a)) == 7 and users(a) != users(b)
    assert len(set(a["tokens"]["valid"]["uid"].to_pylist())) == 30  # evaluation keeps every user


def test_config_is_validated():
    with pytest.raises(PipelineError, match="prompts.mlm_mask_prob"):
        PromptsConfig(mlm_mask_prob=0.0)
    with pytest.raises(PipelineError, match="prompts.history_len"):
        PromptsConfig(history_len=0)


# ------------------------------------------------------------------ the stage on a tiny fixture

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)",
          "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", "Twelve Monkeys (1995)", "Babe (1995)",
          "Dead Man Walking (1995)", "Richard III (1995)", "Seven (Se7en) (1995)", "Usual Suspects, The (1995)"]


def write_tiny(root: Path, dataset: str = "ml-tiny") -> None:
    """A hand-made 4-user split (times out of id order) + its candidate sets, under root/data."""
    seqs = {0: [3, 1, 7, 0, 4, 9], 1: [2, 8, 4, 6, 10], 2: [11, 0, 1, 2, 3, 4, 5], 3: [9, 7, 5]}
    rows = {"train": [], "valid": [], "test": []}
    for u, seq in seqs.items():
        ts = 100 * u + np.arange(len(seq))[::-1]  # later raw rows carry earlier times
        for pos, k in enumerate(np.argsort(ts)):
            name = "test" if pos == len(seq) - 1 else "valid" if pos == len(seq) - 2 else "train"
            rows[name].append((u, seq[k], float(1 + (u + k) % 5), int(ts[k]), 10 * u + int(k)))
    split_dir = root / "data/split" / dataset
    split_dir.mkdir(parents=True)
    tables = {}
    for name, rs in rows.items():
        u, i, r, t, raw = zip(*rs)
        tables[name] = pa.table({"uid": pa.array(u, pa.int32()), "iid": pa.array(i, pa.int32()),
                                 "rating": pa.array(r, pa.float32()), "timestamp": pa.array(t, pa.int64()),
                                 "raw_row": pa.array(raw, pa.int64())})
        pq.write_table(tables[name], split_dir / f"{name}.parquet")
    (root / "data/kcore" / dataset).mkdir(parents=True)
    pq.write_table(pa.table({"iid": pa.array(range(len(TITLES)), pa.int32()), "title": TITLES,
                             "categories": [""] * len(TITLES), "description": [""] * len(TITLES)}),
                   root / "data/kcore" / dataset / "items.parquet")
    sets, _ = make_all(tables, TITLES, NegativesConfig(seed=1, text_fraction=0.0, topk_negatives=3,
                                                       ranking_negatives=4))
    (root / "data/negatives" / dataset).mkdir(parents=True)
    for name, t in sets.items():
        pq.write_table(t, root / "data/negatives" / dataset / f"{name}.parquet")


def run_stage(root: Path, monkeypatch, dataset: str = "ml-tiny", **overrides) -> None:
    import yaml

    from stages import build_prompts

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["prompts"].update(train_topk_negatives=3, max_train_users=None, **overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["build_prompts", dataset])
    build_prompts.main()


def test_stage_on_tiny_fixture(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    run_stage(tmp_path, monkeypatch)
    out = tmp_path / "data/prompts/ml-tiny"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == sorted(
        f"{r}/{s}.parquet" for r in ("text", "tokens") for s in ("items", "test", "train", "valid"))
    split = {s: pq.read_table(tmp_path / f"data/split/ml-tiny/{s}.parquet") for s in ("train", "valid", "test")}
    valid, test = per_user(split["valid"]), per_user(split["test"])
    for render in ("tokens", "text"):
        for s in ("train", "valid", "test"):
            t = pq.read_table(out / render / f"{s}.parquet")
            assert t.schema.equals(SCHEMA, check_metadata=False)
            for row in t.to_pylist():
                assert row["prompt"].endswith("Answer:")
                if row["uid"] < 0:
                    continue
                ids = referenced(row, render)
                if s == "train":  # held-out items nowhere, not even as negatives
                    assert not ids & (valid[row["uid"]] | test[row["uid"]]), row
                if s == "valid":
                    assert not ids & test[row["uid"]], row
    # user 0's train items in time order are the reverse of the raw order: history follows time
    row = next(r for r in pq.read_table(out / "tokens/valid.parquet").to_pylist() if r["task"] == "retrieval"
               and r["uid"] == 0)
    assert row["prompt"] == ("User <uid_0> has watched the following movies <iid_9> (Richard III (1995)), "
                             "<iid_4> (Copycat (1995)), <iid_0> (Toy Story (1995)), <iid_7> (Babe (1995)). "
                             "Predict the next movie he/she will watch. Answer:")
    assert row["answer"] == "<iid_1>"
    metrics = json.loads((tmp_path / "data/metrics/prompts/ml-tiny.json").read_text())
    assert metrics["counts"]["test"]["interaction"] == {"tokens": 8, "text": 8}
    assert set(metrics["histories_truncated"]["train"]) == {"tokens", "text"}
    assert metrics["mean_prompt_chars"]["test"]["tokens"] > 0


def test_stage_is_byte_deterministic(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    out = tmp_path / "data/prompts/ml-tiny"
    run_stage(tmp_path, monkeypatch)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    run_stage(tmp_path, monkeypatch)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.parquet"))} == first
    run_stage(tmp_path, monkeypatch, seed=99)
    assert (out / "tokens/train.parquet").read_bytes() != first[out / "tokens/train.parquet"]


def test_missing_split_file_is_named(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    (tmp_path / "data/split/ml-tiny/valid.parquet").unlink()
    with pytest.raises(PipelineError, match=r"valid\.parquet: not found.*dvc repro split"):
        run_stage(tmp_path, monkeypatch)
    assert not (tmp_path / "data/prompts").exists()


def test_items_missing_an_id_is_named(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    path = tmp_path / "data/kcore/ml-tiny/items.parquet"
    pq.write_table(pq.read_table(path).filter(pa.array([i != 11 for i in range(len(TITLES))])), path)
    with pytest.raises(PipelineError, match="items.parquet: no row for iid 11"):
        run_stage(tmp_path, monkeypatch)


def test_load_inputs_names_missing_negatives(tmp_path):
    write_tiny(tmp_path)
    (tmp_path / "data/negatives/ml-tiny/test_ranking.parquet").unlink()
    with pytest.raises(PipelineError, match=r"test_ranking\.parquet: not found.*negatives"):
        load_inputs(tmp_path / "data/split/ml-tiny", tmp_path / "data/negatives/ml-tiny",
                    tmp_path / "data/kcore/ml-tiny/items.parquet")


def test_pair_prompts_rebuild_every_interaction_prompt(built, tmp_path):
    """pair_prefix + an item's pair_suffix is exactly the interaction prompt of that pair, so
    BDLM's DRS reads h for any (row, candidate) from the same wording the LLM trained on."""
    inputs, tables, _ = built
    from pipeline.llm.prompts.build import item_tables
    items = item_tables(inputs, cfg(), "ml-tiny")
    for render in ("tokens", "text"):
        suffix = items[render]["pair_suffix"].to_pylist()
        assert items[render]["iid"].to_pylist() == list(range(len(suffix)))
        for split in ("train", "valid", "test"):
            rows = tables[render][split].to_pylist()
            inter = [r for r in rows if r["task"] == "interaction"]
            assert inter
            for r in inter:
                assert r["pair_prefix"] + suffix[r["iid"]] == r["prompt"]
            for r in rows:  # every row with a user history carries its pair prefix
                assert bool(r["pair_prefix"]) == (r["task"] != "mlm")


# ------------------------------------------------------------------ training users, sampler, user token

def _eval_users(inputs: Inputs, n: int, seed: int = 3) -> np.ndarray:
    from pipeline.eval.evaluator import user_subset

    return user_subset(inputs.splits["test"], n, seed)


def test_eval_first_trains_every_evaluated_user_then_fills_the_cap():
    inputs = synthetic(n_users=40)
    users = _eval_users(inputs, 12)
    for cap, expect_all in ((20, True), (12, True), (5, False)):
        _, metrics = build_all(inputs, cfg(train_users="eval_first", max_train_users=cap), "ml-tiny", users)
        assert metrics["train_users"] == cap
        assert metrics["evaluated_users"] == 12
        assert metrics["evaluated_users_in_train"] == (12 if expect_all else cap)
        assert ("train_users_note" in metrics) == (not expect_all)
    tables, _ = build_all(inputs, cfg(train_users="eval_first", max_train_users=20), "ml-tiny", users)
    topk_users = set(tables["tokens"]["train"].filter(pa.compute.equal(tables["tokens"]["train"]["task"], "topk"))
                     ["uid"].to_pylist())
    assert set(users.tolist()) <= topk_users
    # `all` draws from every user: on this seed some evaluated users get no training prompt
    _, metrics = build_all(inputs, cfg(train_users="all", max_train_users=12), "ml-tiny", users)
    assert metrics["evaluated_users_in_train"] < 12
    with pytest.raises(PipelineError, match="prompts.train_users is eval_first"):
        build_all(inputs, cfg(train_users="eval_first", max_train_users=5), "ml-tiny")
    with pytest.raises(PipelineError, match="prompts.train_users must be one of all, eval_first"):
        cfg(train_users="evaluated")


def test_train_topk_sets_use_the_evaluation_sampler_around_the_history_before_the_target():
    from pipeline.data.negatives import history_pool, text_vectors
    from pipeline.data.textsim import topk_neighbors

    inputs = synthetic(n_users=30)
    sampler = NegativesConfig(seed=1, text_fraction=0.5, text_pool=10, text_history=4, popularity_alpha=0.75)
    c = cfg(train_topk_sampler="eval", train_topk_negatives=8, history_len=20)
    tables, metrics = build_all(inputs, c, "ml-tiny", sampler=sampler)
    assert metrics["train_topk_sampler"] == "eval" and metrics["train_topk_text_anchor"] == "history"
    assert metrics["train_topk_mean_text_negatives"] == 4.0  # round(0.5 * 8), as the evaluation sets
    seqs: dict[int, list[int]] = {}
    for u, i in zip(inputs.splits["train"]["uid"].to_pylist(), inputs.splits["train"]["iid"].to_pylist()):
        seqs.setdefault(u, []).append(i)
    interacted = {u: set(seqs[u]) for u in seqs}
    for sp in ("valid", "test"):
        for u, i in zip(inputs.splits[sp]["uid"].to_pylist(), inputs.splits[sp]["iid"].to_pylist()):
            interacted.setdefault(u, set()).add(i)
    vectors = text_vectors(_titles(N_ITEMS), sampler)
    nb = lambda items: topk_neighbors(vectors, items, sampler.text_pool)  # noqa: E731
    rows = [r for r in tables["tokens"]["train"].to_pylist() if r["task"] == "topk"]
    assert rows
    for r in rows:
        seq = seqs[r["uid"]]
        before = seq[:seq.index(r["iid"])][-sampler.text_history:]
        anchors = np.full((1, sampler.text_history), -1, dtype=np.int64)
        anchors[0, sampler.text_history - len(before):] = before
        pool = set(history_pool(anchors, nb, sampler.text_pool)[0].tolist()) - {-1}
        negs = set(r["candidates"]) - {r["iid"]}
        assert len(negs) == 8
        # at least the text share comes from the history's pool (popularity draws may land there too)
        drawable = pool - interacted[r["uid"]]
        assert len(negs & drawable) >= min(4, len(drawable)), r
        assert not negs & interacted[r["uid"]]
    _, m2 = build_all(inputs, cfg(train_topk_sampler="popularity", train_topk_negatives=8), "ml-tiny")
    assert m2["train_topk_sampler"] == "popularity" and "train_topk_mean_text_negatives" not in m2
    with pytest.raises(PipelineError, match="train_topk_sampler is eval"):
        build_all(inputs, c, "ml-tiny")


@pytest.mark.parametrize("render,user", [("tokens", "user <uid_{}>"), ("text", "user {}")])
def test_user_token_at_answer_names_the_user_right_before_the_answer(render, user):
    inputs = synthetic(n_users=10)
    plain, _ = build_all(inputs, cfg(), "ml-tiny")
    named, _ = build_all(inputs, cfg(user_token_at_answer=True), "ml-tiny")
    for s in ("train", "valid", "test"):
        a, b = plain[render][s].to_pylist(), named[render][s].to_pylist()
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x["answer"] == y["answer"] and x["candidates"] == y["candidates"]
            if x["uid"] < 0 or x["task"] == "interaction":  # MLM names no user; interaction is the pair prompt
                assert x["prompt"] == y["prompt"]
                continue
            assert x["prompt"].endswith(" Answer:")
            assert y["prompt"] == x["prompt"][:-len("Answer:")] + f"Answer for {user.format(x['uid'])}:"
