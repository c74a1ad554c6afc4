"""Reading the report's inputs (pipeline.eval.report.inputs): a malformed metrics, give-away or
outcomes file, or a scored file in the old format, is an error that names the file (and the stage
to re-run)."""
from __future__ import annotations

import json

import pytest

from pipeline.errors import PipelineError
from pipeline.eval.report.build import build_report
from pipeline.eval.report.inputs import collect
from tests.report_data import DS, giveaway, put


@pytest.mark.parametrize("kind,name,content,match", [
    ("llm", "full", "{not json", r"llm/fake/full\.json: not a readable JSON"),
    ("domain", "ncf", {"topk": {"HR@1": "0.3"}}, r"domain/fake/ncf\.json: 'topk\.HR@1' is '0\.3', not a number"),
    ("domain", "gmf", [1, 2], r"domain/fake/gmf\.json: expected a JSON object, got list"),
    ("joint", "bdlm", {"llm": {}}, r"joint/fake/bdlm\.json: joint metrics need an 'drs'"),
    ("joint", "wo_jl", {"llm": {}, "drs": {"binary": 3}}, r"joint/fake/wo_jl\.json \[drs\]: 'binary' should map"),
    ("llm", "no_pe", {"users_scored": "all"}, r"llm/fake/no_pe\.json: 'users_scored' is 'all'"),
    ("sft", "full", {"history": {"step": 1}}, r"sft/fake/full\.json: 'history' should be a list"),
    ("floors", "random", {"schema": 2, "ci": {"topk/HR@1": 0.3}}, r"floors/fake/random\.json: 'ci\.topk/HR@1' is 0\.3"),
])
def test_malformed_metrics_file_is_named(data, kind, name, content, match):
    put(data, kind, name, content)
    with pytest.raises(PipelineError, match=match):
        collect(data, DS)


@pytest.mark.parametrize("kind,name,content,match", [
    # the old format: no schema, no intervals
    ("domain", "ncf", {"model": "ncf", "topk": {"HR@1": 0.3}},
     r"domain/fake/ncf\.json: old metrics format \('schema' is None, not 2\).*`dvc repro evaluate_domain@fake-ncf`"),
    ("llm", "full", {"variant": "full", "users_scored": 20, "topk": {"HR@1": 0.3}},
     r"llm/fake/full\.json: old metrics format.*`dvc repro evaluate_llm@fake-full`"),
    ("joint", "bdlm", {"schema": 2, "llm": {"ci": {}}, "drs": {"topk": {"HR@1": 0.3}}},
     r"joint/fake/bdlm\.json: old metrics format \(no intervals \('ci'\) in \[drs\]\).*evaluate_joint@fake-bdlm"),
    ("floors", "centrality", {"schema": 2, "ci": {}, "llm_users": {"topk": {}}},
     r"floors/fake/centrality\.json: old metrics format.*\[llm_users\].*`dvc repro evaluate_floors@fake`"),
])
def test_old_schema_file_names_the_file_and_the_stage(data, kind, name, content, match):
    put(data, kind, name, content)
    with pytest.raises(PipelineError, match=match):
        collect(data, DS)


def test_broken_giveaway_or_outcomes_file_is_named(data):
    (data / "metrics" / "giveaway" / f"{DS}.json").write_text(json.dumps({"gives_away": "no"}))
    with pytest.raises(PipelineError, match=r"giveaway/fake\.json: 'gives_away' is 'no'"):
        collect(data, DS)
    giveaway(data, False)
    (data / "outcomes" / "domain" / DS / "mostpop.parquet").write_text("not parquet")
    with pytest.raises(PipelineError, match=r"outcomes/domain/fake/mostpop\.parquet: not a readable outcomes"):
        build_report(collect(data, DS))
