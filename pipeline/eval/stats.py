"""Uncertainty for evaluation results: each test user contributes one outcome per metric.

Which method, and why:
- wilson: HR@k is a per-user Bernoulli outcome (hit or miss). On ~100 users with a rate near 0
  the normal (Wald) interval dips below 0 or collapses to width 0; the Wilson score interval
  stays inside [0, 1] and keeps its coverage there.
- bootstrap_mean / bootstrap_statistic: NDCG@k and friends are real-valued with a skewed,
  zero-heavy distribution, and F1 / AUC are not means at all; resampling users (the unit that
  was sampled) gives a percentile interval without distributional assumptions.
- mcnemar: two models are scored on the SAME users, so their hits are paired. Only users on
  which the models disagree carry information about the difference; an exact binomial test
  on those discordant pairs is valid even when they are few.
- paired_bootstrap: the paired test for real-valued outcomes (NDCG): resample users, keeping
  each user's two outcomes together.
- holm: several comparisons in one table; Holm controls the family-wise error rate and is
  never less powerful than Bonferroni.
Every random draw is seeded, so the same inputs give the same interval on every run.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from scipy import stats as sps

from pipeline.errors import PipelineError

# Elements of the [resamples, users] index matrix drawn at once: the matrix and the gathered
# values are 8 bytes each, so a chunk costs ~64 MB whatever the number of users.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    method: str  # "wilson" or "bootstrap"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """diff = mean(a) - mean(b); [low, high] its interval; p_value two-sided for diff == 0."""
    diff: float
    low: float
    high: float
    p_value: float
    method: str  # "mcnemar" or "paired_bootstrap"
    n: int

    def significant(self, alpha: float = 0.05) -> bool:
        return bool(self.p_value < alpha)  # False for a NaN p-value

    def as_dict(self) -> dict:
        return asdict(self)


def _z(confidence: float) -> float:
    _check_confidence(confidence)
    return float(sps.norm.ppf(0.5 + confidence / 2))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise PipelineError(f"confidence must be in (0, 1), got {confidence}")


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0, 1)).all())


def _as_1d(values, name: str) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1:
        raise PipelineError(f"{name}: expected one outcome per user (1-D), got shape {x.shape}")
    return x


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for successes/n: center (p + z^2/2n) / (1 + z^2/n),
    half-width z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n). n == 0 gives NaNs, not an error."""
    z = _z(confidence)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, "wilson")
    if not 0 <= successes <= n:
        raise PipelineError(f"wilson: successes={successes} is outside [0, n={n}]")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bounds are exactly 0 / 1 at the extremes; pin them so rounding cannot leave [0, 1]
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(p, low, high, "wilson")


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of n_boot resamples of values (users drawn with repetition), in bounded-memory chunks."""
    n = len(values)
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def _percentiles(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_mean(values: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap of the mean of per-user outcomes (e.g. NDCG@10 per user)."""
    _check_confidence(confidence)
    x = _as_1d(values, "bootstrap_mean").astype(np.float64)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, "bootstrap")
    boot = _bootstrap_means(x, n_boot, np.random.default_rng(seed))
    low, high = _percentiles(boot, confidence)
    return Interval(float(x.mean()), low, high, "bootstrap")


def bootstrap_statistic(n_users: int, statistic: Callable[[np.ndarray], float], confidence: float = 0.95,
                        n_boot: int = 1000, seed: int = 0, value: float | None = None) -> Interval:
    """Percentile bootstrap of any per-user metric (F1, AUC): statistic(idx) gets resampled user
    indices (with repetition) and returns the metric on those users' rows. NaN resamples
    (e.g. AUC on a one-class draw) are dropped."""
    _check_confidence(confidence)
    if n_users == 0:
        return Interval(math.nan, math.nan, math.nan, "bootstrap")
    if value is None:
        value = statistic(np.arange(n_users))
    rng = np.random.default_rng(seed)
    boot = np.array([statistic(rng.integers(0, n_users, size=n_users)) for _ in range(n_boot)], dtype=np.float64)
    boot = boot[~np.isnan(boot)]
    low, high = _percentiles(boot, confidence) if len(boot) else (math.nan, math.nan)
    return Interval(float(value), low, high, "bootstrap")


def interval_for(values: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Wilson for a hit rate (every value 0 or 1), bootstrap of the mean otherwise."""
    x = _as_1d(values, "interval_for")
    if _is_binary(x):
        return wilson(int(np.count_nonzero(x)), len(x), confidence)
    return bootstrap_mean(x, confidence, n_boot, seed)


def _paired(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_1d(a, names[0]), _as_1d(b, names[1])
    if len(a) != len(b):
        raise PipelineError(f"paired test of {names[0]} vs {names[1]}: {names[0]} has {len(a)} users, "
                            f"{names[1]} has {len(b)}; both must be scored on the same users in the same order")
    if len(a) == 0:
        raise PipelineError(f"paired test of {names[0]} vs {names[1]}: no users to compare (both are empty)")
    return a, b


def mcnemar(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, *,
            names: tuple[str, str] = ("a", "b")) -> PairedTest:
    """Exact McNemar test on per-user 0/1 hits of two models over the same users.

    With b10 = #(a hit, b miss), b01 = #(a miss, b hit) and n users:
    - p: two-sided exact binomial test of b10 ~ Binomial(b10 + b01, 1/2); 1.0 if b10 + b01 == 0.
    - diff = (b10 - b01) / n = mean(a) - mean(b), with the Wald-type paired interval
      diff +- z * sqrt(b10 + b01 - (b10 - b01)^2 / n) / n, clipped to [-1, 1].
    """
    z = _z(confidence)
    a, b = _paired(a, b, names)
    for x, name in ((a, names[0]), (b, names[1])):
        if not _is_binary(x):
            raise PipelineError(f"mcnemar: {name} must be per-user 0/1 hits; use paired_bootstrap for real values")
    a, b = a.astype(bool), b.astype(bool)
    n = len(a)
    b10 = int(np.count_nonzero(a & ~b))
    b01 = int(np.count_nonzero(~a & b))
    discordant = b10 + b01
    p = float(sps.binomtest(b10, discordant, 0.5).pvalue) if discordant else 1.0
    diff = (b10 - b01) / n
    # max(0, .) guards against a tiny negative from rounding when all pairs are discordant one way
    half = z * math.sqrt(max(0.0, discordant - (b10 - b01) ** 2 / n)) / n
    return PairedTest(diff, max(-1.0, diff - half), min(1.0, diff + half), min(1.0, p), "mcnemar", n)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0, *,
                     names: tuple[str, str] = ("a", "b")) -> PairedTest:
    """Paired bootstrap for per-user real-valued outcomes (NDCG) of two models on the same users.

    d = a - b per user; users are resampled (each keeps both outcomes), d* = mean of d on a
    resample. Interval: percentiles of d*. Two-sided p for "no difference":
    p = min(1, 2 * min((#{d* <= 0} + 1) / (n_boot + 1), (#{d* >= 0} + 1) / (n_boot + 1))),
    the +1 keeping p > 0 (a p of exactly 0 cannot come from n_boot finite draws).
    """
    _check_confidence(confidence)
    a, b = _paired(a, b, names)
    a, b = a.astype(np.float64), b.astype(np.float64)
    boot = _bootstrap_means(a - b, n_boot, np.random.default_rng(seed))
    low, high = _percentiles(boot, confidence)
    below = (np.count_nonzero(boot <= 0) + 1) / (n_boot + 1)
    above = (np.count_nonzero(boot >= 0) + 1) / (n_boot + 1)
    p = min(1.0, 2 * min(below, above))
    return PairedTest(float(a.mean() - b.mean()), low, high, p, "paired_bootstrap", len(a))


def paired_test(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0, *,
                names: tuple[str, str] = ("a", "b")) -> PairedTest:
    """McNemar when both are 0/1 hits, paired bootstrap otherwise. names label the two models
    in error messages."""
    a, b = _paired(a, b, names)
    if _is_binary(a) and _is_binary(b):
        return mcnemar(a, b, confidence, names=names)
    return paired_bootstrap(a, b, confidence, n_boot, seed, names=names)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values in the input order: the i-th smallest (0-based) is
    multiplied by (m - i), then a running max keeps them monotone, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic on average ranks (a tie counts half);
    NaN when only one class is present."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if len(s) != len(y):
        raise PipelineError(f"auc: {len(s)} scores but {len(y)} labels")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = sps.rankdata(s)  # average ranks: ties share the mean rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
