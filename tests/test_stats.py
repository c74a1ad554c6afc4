"""Evaluation statistics (pipeline/eval/stats.py) against cases computed by hand (z = 1.959964 at 95%)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.eval import stats
from pipeline.errors import PipelineError
from pipeline.eval.stats import (Interval, PairedTest, auc, bootstrap_mean, bootstrap_statistic, holm, interval_for,
                            mcnemar, paired_bootstrap, paired_test, wilson)


def hits(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user 0/1 hits of two models with the given counts of (a, b) outcome pairs."""
    pairs = [(1, 1)] * n11 + [(1, 0)] * n10 + [(0, 1)] * n01 + [(0, 0)] * n00
    a, b = np.array(pairs).T
    return a, b


# ---------------------------------------------------------------- Wilson

def test_wilson_20_of_100():
    # p = 0.2, z^2 = 3.841459, denom = 1 + z^2/100 = 1.0384146
    # center = (0.2 + z^2/200) / denom = 0.2192073 / 1.0384146 = 0.211098
    # half = z * sqrt(0.2*0.8/100 + z^2/40000) / denom = 1.959964 * sqrt(0.001696037) / 1.0384146
    #      = 1.959964 * 0.0411830 / 1.0384146 = 0.077731
    # -> (0.133367, 0.288829)
    iv = wilson(20, 100)
    assert iv.value == 0.2 and iv.method == "wilson"
    assert iv.low == pytest.approx(0.1334, abs=1e-3) and iv.high == pytest.approx(0.2888, abs=1e-3)
    assert iv.low == pytest.approx(0.133367, abs=1e-5) and iv.high == pytest.approx(0.288829, abs=1e-5)


def test_wilson_zero_successes_starts_at_zero():
    # p = 0: center = half = (z^2/20) / (1 + z^2/10) = 0.1920730 / 1.3841459 = 0.138766 -> (0, 0.277532)
    iv = wilson(0, 10)
    assert iv.low == 0.0 and iv.value == 0.0
    assert iv.high == pytest.approx(0.277532, abs=1e-5)
    # and by symmetry 10/10 ends exactly at 1
    full = wilson(10, 10)
    assert full.high == 1.0 and full.low == pytest.approx(1 - 0.277532, abs=1e-5)


def test_wilson_empty_is_nan_not_an_error():
    iv = wilson(0, 0)
    assert math.isnan(iv.value) and math.isnan(iv.low) and math.isnan(iv.high) and iv.method == "wilson"


def test_wilson_rejects_impossible_counts():
    with pytest.raises(PipelineError, match="outside"):
        wilson(11, 10)


def test_interval_as_dict():
    assert Interval(0.2, 0.1, 0.3, "wilson").as_dict() == {"value": 0.2, "low": 0.1, "high": 0.3, "method": "wilson"}


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_mean_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.normal(size=100))
    large_values = rng.normal(size=10_000)
    large = bootstrap_mean(large_values)
    for iv in (small, large):
        assert iv.method == "bootstrap" and iv.low < iv.value < iv.high
    assert large.value == pytest.approx(large_values.mean())
    # width ~ 2 * 1.96 * sd / sqrt(n): ~0.39 at n = 100, ~0.039 at n = 10 000
    assert (large.high - large.low) == pytest.approx(2 * 1.959964 / 100, rel=0.1)
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_bootstrap_is_repeatable_with_a_seed():
    x = np.random.default_rng(2).random(300)
    assert bootstrap_mean(x, seed=7) == bootstrap_mean(x, seed=7)
    assert bootstrap_mean(x, seed=7) != bootstrap_mean(x, seed=8)
    assert paired_bootstrap(x, x[::-1], seed=3) == paired_bootstrap(x, x[::-1], seed=3)


def test_bootstrap_of_a_constant_is_a_point():
    iv = bootstrap_mean(np.full(50, 0.25), n_boot=200)
    assert iv.value == iv.low == iv.high == pytest.approx(0.25)


def test_bootstrap_chunks_fill_every_resample(monkeypatch):
    # 1000 elements per chunk on 300 users = 3 resamples a chunk; 1000 is not a multiple of 3
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 1000)
    x = np.random.default_rng(4).random(300)
    means = stats._bootstrap_means(x, 1000, np.random.default_rng(0))
    assert means.shape == (1000,) and x.min() <= means.min() and means.max() <= x.max()
    # sd of a resampled mean = sd(x) / sqrt(n)
    assert means.std() == pytest.approx(x.std() / math.sqrt(300), rel=0.15)


def test_bootstrap_statistic_defaults_value_and_matches_bootstrap_mean():
    x = np.random.default_rng(5).random(200)
    iv = bootstrap_statistic(len(x), lambda idx: float(x[idx].mean()), n_boot=500)
    assert iv.value == pytest.approx(x.mean()) and iv.method == "bootstrap"
    ref = bootstrap_mean(x, n_boot=500)
    assert iv.low == pytest.approx(ref.low, abs=0.01) and iv.high == pytest.approx(ref.high, abs=0.01)
    assert bootstrap_statistic(len(x), lambda idx: 0.0, n_boot=10, value=0.5).value == 0.5


def test_interval_for_picks_wilson_for_hits_and_bootstrap_otherwise():
    hr = np.array([1] * 20 + [0] * 80)
    assert interval_for(hr) == wilson(20, 100)
    assert interval_for(hr.astype(bool)) == wilson(20, 100)
    ndcg = np.array([1.0, 0.5, 0.0, 0.63])
    assert interval_for(ndcg, n_boot=100).method == "bootstrap"


# ---------------------------------------------------------------- paired tests

def test_mcnemar_exact_p_and_paired_interval():
    # b10 = 8, b01 = 2 (10 discordant), 10 both hit, 30 both miss: n = 50
    # p = 2 * P(X <= 2 | 10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 112 / 1024 = 0.109375
    # diff = (8 - 2) / 50 = 0.12; half = z * sqrt(10 - 36/50) / 50 = 1.959964 * 3.046309 / 50 = 0.119413
    a, b = hits(10, 8, 2, 30)
    t = mcnemar(a, b)
    assert t.method == "mcnemar" and t.n == 50
    assert t.p_value == pytest.approx(0.109375, abs=1e-12)
    assert t.diff == pytest.approx(0.12)
    assert t.low == pytest.approx(0.000587, abs=1e-5) and t.high == pytest.approx(0.239413, abs=1e-5)
    assert not t.significant()
    # swapping the models flips the sign, not the p-value
    r = mcnemar(b, a)
    assert r.diff == pytest.approx(-0.12) and r.p_value == t.p_value and r.low == pytest.approx(-t.high)


def test_mcnemar_identical_models():
    a, _ = hits(10, 8, 2, 30)
    t = mcnemar(a, a)
    assert t.p_value == 1.0 and t.diff == 0.0 and t.low == 0.0 and t.high == 0.0


def test_mcnemar_interval_clipped_to_minus_one_one():
    # every user discordant one way: diff = 1, half = z * sqrt(5 - 25/5) / 5 = 0 -> [1, 1]
    t = mcnemar(np.ones(5, int), np.zeros(5, int))
    assert t.diff == 1.0 and t.low == 1.0 and t.high == 1.0
    assert t.p_value == pytest.approx(2 / 32)  # 2 * 0.5^5


def test_paired_bootstrap_constant_shift():
    # d = a - b = 0.1 for every user, so every d* = 0.1 > 0: #{d* <= 0} = 0
    # p = 2 * (0 + 1) / (999 + 1) = 0.002
    b = np.random.default_rng(6).random(80)
    t = paired_bootstrap(b + 0.1, b, n_boot=999)
    assert t.method == "paired_bootstrap" and t.n == 80
    assert t.diff == pytest.approx(0.1) and t.low == pytest.approx(0.1) and t.high == pytest.approx(0.1)
    assert t.p_value == pytest.approx(0.002) and t.significant()


def test_paired_bootstrap_no_difference():
    # d = 0 everywhere: both counts are n_boot -> p = min(1, 2 * 1) = 1
    x = np.random.default_rng(7).random(40)
    t = paired_bootstrap(x, x.copy(), n_boot=200)
    assert t.diff == 0.0 and t.p_value == 1.0 and not t.significant()


def test_paired_test_dispatch():
    a, b = hits(10, 8, 2, 30)
    assert paired_test(a, b) == mcnemar(a, b)
    x = np.linspace(0, 1, 50)
    assert paired_test(x, b, n_boot=100, seed=1) == paired_bootstrap(x, b, n_boot=100, seed=1)


def test_paired_test_rejects_mismatched_or_empty_inputs():
    with pytest.raises(PipelineError, match=r"100.*99"):
        paired_test(np.zeros(100), np.zeros(99))
    with pytest.raises(PipelineError, match="sasrec.*bpr"):
        paired_test(np.zeros(3), np.zeros(4), names=("sasrec", "bpr"))
    with pytest.raises(PipelineError, match="empty"):
        paired_test(np.array([]), np.array([]))
    with pytest.raises(PipelineError, match="0/1"):
        mcnemar(np.array([0.5, 1.0]), np.array([0, 1]))


def test_paired_test_as_dict():
    t = PairedTest(0.1, 0.0, 0.2, 0.04, "mcnemar", 50)
    assert t.as_dict() == {"diff": 0.1, "low": 0.0, "high": 0.2, "p_value": 0.04, "method": "mcnemar", "n": 50}
    assert t.significant() and not t.significant(alpha=0.01)


# ---------------------------------------------------------------- Holm

def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # 0.5 * 2 = 1.0, 0.6 * 1 = 0.6 -> monotone 1.0, 1.0 (and never above 1)
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]
    assert holm([]) == []


# ---------------------------------------------------------------- AUC

def test_auc_by_hand():
    y = np.array([0, 0, 1, 1])
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert auc(np.full(4, 0.3), y) == 0.5
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: wins 0.35>0.1, 0.8>0.1, 0.8>0.4 = 3 of 4
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), y) == 0.75
    # positives 2, 3 vs negatives 1, 2: 2>1, 2=2 (half), 3>1, 3>2 = 3.5 of 4
    assert auc(np.array([1.0, 2.0, 2.0, 3.0]), y) == 0.875


def test_auc_one_class_is_nan():
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([0, 0])))


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(8)
    s = rng.integers(0, 5, size=200).astype(float)  # many ties
    y = rng.integers(0, 2, size=200)
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s))
