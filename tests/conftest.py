from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURES, gzip_file, make_zip

pytest_plugins = ["tests.report_data"]  # the report tests' `built` and `data` fixtures


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Downloads in tests never touch the user's cache."""
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def ml100k_official(tmp_path) -> Path:
    d = tmp_path / "official"
    d.mkdir()
    make_zip(d / "ml-100k.zip", {"ml-100k/u.data": FIXTURES / "ml-100k/u.data",
                                 "ml-100k/u.item": FIXTURES / "ml-100k/u.item"})
    return d


@pytest.fixture
def ml1m_official(tmp_path) -> Path:
    d = tmp_path / "official1m"
    d.mkdir()
    make_zip(d / "ml-1m.zip", {"ml-1m/ratings.dat": FIXTURES / "ml-1m/ratings.dat",
                               "ml-1m/movies.dat": FIXTURES / "ml-1m/movies.dat"})
    return d


@pytest.fixture
def amazon_raw(tmp_path) -> Path:
    d = tmp_path / "amazon"
    d.mkdir()
    gzip_file(FIXTURES / "amazon/reviews_Beauty_5.json", d / "reviews_Beauty_5.json.gz")
    gzip_file(FIXTURES / "amazon/meta_Beauty.json", d / "meta_Beauty.json.gz")
    return d

