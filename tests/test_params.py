from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.params import get, load_params, section
from tests.conftest import REPO


def test_repo_params_load_and_have_every_stage_section():
    params = load_params(REPO / "params.yaml")
    for name in ("download", "kcore", "split", "negatives"):
        assert isinstance(section(params, name), dict)
    assert params["datasets"] == ["ml-100k"]


def test_missing_and_mistyped_params_are_named():
    with pytest.raises(PipelineError, match="missing param 'kcore.user_k'"):
        get({}, "user_k", int, "kcore")
    with pytest.raises(PipelineError, match="'kcore.user_k' must be int, got '5'"):
        get({"user_k": "5"}, "user_k", int, "kcore")
    with pytest.raises(PipelineError, match="'kcore.user_k' must be int, got True"):
        get({"user_k": True}, "user_k", int, "kcore")
    assert get({"min_rating": None}, "min_rating", (int, float, type(None)), "kcore") is None
    with pytest.raises(PipelineError, match="missing section 'split'"):
        section({}, "split")


def test_params_file_missing(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "params.yaml")
