"""The user-agnostic floors and the floors stage."""
from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.eval.floors import centrality, floor_scores
from tests.helpers import REPO, random_log


def test_centrality_hand_case():
    # unit vectors: a and b identical, c orthogonal -> a: 1 + 0, b: 1 + 0, c: 0 + 0
    v = np.array([[1.0, 0], [1.0, 0], [0, 1.0]])
    np.testing.assert_allclose(centrality(v, np.array([[0, 1, 2]])), [[1.0, 1.0, 0.0]])
    import scipy.sparse as sp

    np.testing.assert_allclose(centrality(sp.csr_matrix(v), np.array([[2, 0, 1]])), [[0.0, 1.0, 1.0]])
    pop = np.log1p(np.array([10.0, 0, 0]))
    s = floor_scores("centrality_pop", np.array([[0, 1, 2]]), v, pop, 0)
    assert s[0, 0] > s[0, 1] > s[0, 2]  # equal centrality: popularity breaks it


def _project(root, titles_empty: bool):
    from pipeline.data.negatives import NegativesConfig, make_all

    n_items = 120
    splits = random_log(60, n_items, (6, 20), seed=3)
    titles = ["" if titles_empty else f"word{i % 11} thing{i % 7} x{i}" for i in range(n_items)]
    sets, _ = make_all(splits, titles, NegativesConfig(seed=1, topk_negatives=9, ranking_negatives=30,
                                                       text_pool=10, text_fraction=0.0 if titles_empty else 0.5))
    for name, t in splits.items():
        (root / "data/split/tiny").mkdir(parents=True, exist_ok=True)
        pq.write_table(t, root / f"data/split/tiny/{name}.parquet")
    (root / "data/negatives/tiny").mkdir(parents=True)
    for name, t in sets.items():
        pq.write_table(t, root / f"data/negatives/tiny/{name}.parquet")
    (root / "data/kcore/tiny").mkdir(parents=True)
    pq.write_table(pa.table({"uid": pa.array(np.arange(60), pa.int32())}), root / "data/kcore/tiny/users.parquet")
    pq.write_table(pa.table({"iid": pa.array(np.arange(n_items), pa.int32()), "title": titles}),
                   root / "data/kcore/tiny/items.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate_llm"]["max_users"] = 20
    params["evaluation"]["bootstrap_samples"] = 100
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize("titles_empty", [False, True])
def test_floors_stage(tmp_path, monkeypatch, titles_empty):
    from stages import evaluate_floors

    _project(tmp_path, titles_empty)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["evaluate_floors", "tiny"])
    evaluate_floors.main()
    rnd = json.loads((tmp_path / "data/metrics/floors/tiny/random.json").read_text())
    assert rnd["schema"] == 2 and rnd["users_scored"] == 60 and rnd["llm_users"]["users_scored"] == 20
    assert {"topk", "ranking", "binary", "retrieval", "retrieval_unmasked"} <= set(rnd)
    lo, hi = rnd["ci"]["topk/HR@1"]
    assert lo <= rnd["topk"]["HR@1"] <= hi
    cent = json.loads((tmp_path / "data/metrics/floors/tiny/centrality.json").read_text())
    check = json.loads((tmp_path / "data/metrics/giveaway/tiny.json").read_text())
    if titles_empty:  # only the floors that need titles are skipped, and the file says why
        assert "topk" not in cent and "no item of tiny has a title" in cent["not_computed"]["topk"]
        assert check["rows"] == [] and "not_computed" in check
    else:
        assert "topk" in cent and "ranking" in cent
        assert {r["scorer"] for r in check["rows"]} == {"centrality", "anti_centrality", "centrality_pop"}
        assert {r["set"] for r in check["rows"]} == {"valid_topk", "valid_ranking", "test_topk", "test_ranking"}
    assert pq.read_table(tmp_path / "data/outcomes/floors/tiny/random.parquet").num_rows > 0
