"""pipeline.eval.compare: the paired test of two outcome files, on the users both score."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import PipelineError
from pipeline.eval import compare, metrics, stats


def _outcomes(ranks: dict[str, np.ndarray], uids: np.ndarray):
    o = metrics.Outcomes()
    for proto, r in ranks.items():
        o.ranks(proto, uids, r)
    return o.table()


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    uids = np.arange(200)
    a_top, b_top = rng.integers(0, 4, 200), rng.integers(0, 19, 200)  # 0-based ranks
    a_ret = rng.integers(0, 50, 200)
    a = _outcomes({"topk": a_top, "retrieval": a_ret}, uids)
    b = _outcomes({"topk": b_top[:150]}, uids[:150])  # B scores 150 of the users, no retrieval
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    return tmp_path / "a.parquet", tmp_path / "b.parquet", a_top[:150], b_top[:150]


def test_the_test_is_the_projects_paired_test_on_the_shared_users(pair):
    pa_, pb, a_top, b_top = pair
    rows = compare.compare(pq.read_table(pa_), pq.read_table(pb), ["topk:HR@1", "topk:NDCG@10", "retrieval:NDCG@20"])
    hr, ndcg, ret = rows
    expected = stats.mcnemar((a_top == 0).astype(float), (b_top == 0).astype(float))
    assert (hr["n"], hr["users_a"], hr["users_b"]) == (150, 200, 150)
    assert hr["diff"] == pytest.approx(np.mean(a_top == 0) - np.mean(b_top == 0)) == pytest.approx(expected.diff)
    assert hr["p"] == pytest.approx(expected.p_value) and hr["method"] == "mcnemar"
    assert ndcg["method"] == "paired_bootstrap" and ndcg["low"] <= ndcg["diff"] <= ndcg["high"]
    assert ndcg["diff"] > 0  # A's positives rank in the top 4, B's anywhere in 19
    # Holm over the two tests run: the smaller p doubled, then kept monotone
    assert sorted([hr["p_holm"], ndcg["p_holm"]])[0] == pytest.approx(min(1.0, 2 * min(hr["p"], ndcg["p"])))
    assert ret == {"protocol": "retrieval", "metric": "NDCG@20", "users_a": 200, "users_b": 0, "n": 0,
                   "skipped": "B has no retrieval rows"}


def test_cli_prints_the_table_and_json(pair, capsys):
    pa_, pb, _, _ = pair
    compare.main([str(pa_), str(pb), "--metric", "topk:HR@1"])
    out = capsys.readouterr().out
    assert "topk        HR@1         150" in out and "mcnemar" in out
    assert "topk: A scores 200 users, B 150; compared on the 150 both score" in out
    compare.main([str(pa_), str(pb), "--metric", "topk:HR@1", "--json"])
    tests = json.loads(capsys.readouterr().out)["tests"]
    assert tests[0]["n"] == 150 and tests[0]["method"] == "mcnemar"


@pytest.mark.parametrize("args, message", [
    (["--metric", "topk:MRR@10"], "--metric 'topk:MRR@10': expected protocol:HR@k"),
    (["--metric", "HR@1"], "--metric 'HR@1': expected"),
    (["--metric", "topk:HR@0"], "--metric 'topk:HR@0'"),
    (["--confidence", "1.5"], "--confidence 1.5: must be between 0 and 1"),
])
def test_bad_arguments_are_named(pair, args, message):
    pa_, pb, _, _ = pair
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace("+", r"\+")):
        compare.main([str(pa_), str(pb), *args])


def test_missing_or_unreadable_files_are_named(pair, tmp_path):
    pa_, _, _, _ = pair
    with pytest.raises(PipelineError, match="nope.parquet: no such outcomes file"):
        compare.main([str(pa_), str(tmp_path / "nope.parquet")])
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(PipelineError, match="bad.parquet: not a readable outcomes Parquet file"):
        compare.main([str(bad), str(pa_)])
