"""The domain baseline table (pipeline.eval.report.baselines, stage baselines) on the report
tests' inputs: every test user, intervals, the floors."""
from __future__ import annotations


import pytest

from pipeline.errors import PipelineError
from pipeline.eval.report.baselines import markdown, table_rows
from stages.baselines import collect_results
from tests.report_data import DS, put


def test_baselines_table_all_users_with_floors(data, monkeypatch):
    """stage baselines: every test user (top-level blocks), intervals, the floors, AUC, masked
    and unmasked retrieval."""
    monkeypatch.chdir(data.parent)
    rows = table_rows(collect_results(DS, ["ncf", "lightgcn", "mostpop"]))
    assert [r["model"] for r in rows] == ["NCF", "LGCN", "MostPop", "Random", "Centrality (title)",
                                          "Centrality + pop."]
    assert rows[0]["topk/HR@1"] == 27 / 40 and rows[0]["users_scored"] == 40 and rows[0]["train_seconds"] == 12.0
    assert rows[1]["retrieval/Recall@10"] == 0.75 and rows[1]["retrieval_unmasked/Recall@10"] == 0.75
    assert not rows[5]["present"]
    md = markdown(rows, "t")
    assert "| model | top-K HR@1 | top-K HR@2 | prec | rec | f1 | AUC | masked Recall@10 | masked NDCG@10 |" \
           " unmasked Recall@10 | unmasked NDCG@10 | ranking HR@1 | ranking NDCG@10 | users | train s |" in md
    assert "| NCF | .675 [.520, .799] |" in md and "| Centrality + pop. | - |" in md
    assert f"`data/metrics/floors/{DS}/centrality_pop.json (`dvc repro evaluate_floors@{DS}`)`" in md
    assert "Every row on every test user (40)" in md
    put(data, "domain", "mostpop", {"model": "mostpop", "topk": {"HR@1": 0.1}})
    with pytest.raises(PipelineError, match=r"mostpop\.json: old metrics format.*evaluate_domain@fake-mostpop"):
        collect_results(DS, ["mostpop"])
