"""Paired statistics for "did this model change on the same items?": bootstrap CI and McNemar.

Both compare two models on the *same* items (paired by ``doc_id``), which is far more sensitive
than comparing two independent accuracies: item difficulty cancels out.

* :func:`paired_bootstrap` resamples items with replacement and takes the percentile interval of
  the mean difference. Resampling is done on the counts of the distinct per-item differences
  (a multinomial draw), which has exactly the distribution of resampling the items themselves
  but costs O(resamples x distinct values) instead of O(resamples x items): correctness
  differences take only the values -1, 0, 1, so 10,000 resamples of 14,000 MMLU items are instant.
* :func:`mcnemar_exact` is the exact (binomial) McNemar test on the discordant pairs.

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
_MAX_DISTINCT_FOR_COUNTS = 256
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class BootstrapCI:
    """A mean difference ``mean(b - a)`` with its percentile bootstrap interval."""

    delta: float
    low: float
    high: float
    n: int
    resamples: int
    confidence: float

    def excludes_zero(self) -> bool:
        """True when the interval lies entirely on one side of zero."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class McNemar:
    """Discordant pair counts and the exact two-sided McNemar p-value."""

    right_to_wrong: int
    wrong_to_right: int
    p_value: float


def _as_pair(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: {x.size} vs {y.size}")
    return x, y


def bootstrap_means(
    values: ArrayLike, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> NDArray[np.float64]:
    """``resamples`` bootstrap replicates of ``mean(values)`` (items drawn with replacement).

    Args:
        values: one number per item (e.g. the per-item difference between two models).
        resamples: number of replicates; at least 1000 for a 95% interval.
        seed: seed of the numpy Generator, so a report is reproducible.

    Returns:
        Array of shape ``(resamples,)``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(v, return_counts=True)
    if distinct.size <= _MAX_DISTINCT_FOR_COUNTS:
        draws = rng.multinomial(v.size, counts / v.size, size=resamples)  # (resamples, distinct)
        return draws @ distinct / v.size
    out = np.empty(resamples)
    step = max(1, _CHUNK_CELLS // v.size)
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        idx = rng.integers(0, v.size, size=(stop - start, v.size))  # (chunk, items)
        out[start:stop] = v[idx].mean(axis=1)
    return out


def percentile_interval(replicates: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``mean(b) - mean(a)`` over paired items.

    Args:
        a: per-item scores of the reference (e.g. the base model), one per item.
        b: per-item scores of the other model, same items in the same order.
        resamples: bootstrap replicates (>= 1000 recommended).
        confidence: interval coverage, e.g. 0.95.
        seed: numpy Generator seed.

    Returns:
        :class:`BootstrapCI` with ``delta = mean(b - a)``.
    """
    x, y = _as_pair(a, b)
    diff = y - x
    reps = bootstrap_means(diff, resamples=resamples, seed=seed)
    low, high = percentile_interval(reps, confidence)
    return BootstrapCI(float(diff.mean()), low, high, int(diff.size), resamples, confidence)


def mean_ci(
    values: ArrayLike, resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
    seed: int = DEFAULT_SEED
) -> BootstrapCI:
    """Percentile bootstrap CI of a plain mean (one model's accuracy); ``delta`` holds the mean."""
    v = np.asarray(values, dtype=np.float64).ravel()
    low, high = percentile_interval(bootstrap_means(v, resamples, seed), confidence)
    return BootstrapCI(float(v.mean()), low, high, int(v.size), resamples, confidence)


def flips(a: ArrayLike, b: ArrayLike) -> tuple[int, int]:
    """``(right_to_wrong, wrong_to_right)`` between paired 0/1 correctness arrays ``a`` -> ``b``."""
    x, y = _as_pair(a, b)
    x_ok, y_ok = x > 0.5, y > 0.5
    return int(np.sum(x_ok & ~y_ok)), int(np.sum(~x_ok & y_ok))


def mcnemar_exact(a: ArrayLike, b: ArrayLike) -> McNemar:
    """Exact two-sided McNemar test of paired 0/1 correctness ``a`` vs ``b``.

    Under the null the discordant pairs split 50/50, so with ``n = r2w + w2r`` the p-value is
    ``min(1, 2 * P[Binomial(n, 1/2) <= min(r2w, w2r)])``; with no discordant pair it is 1.
    """
    r2w, w2r = flips(a, b)
    n = r2w + w2r
    p = 1.0 if n == 0 else min(1.0, 2.0 * float(sps.binom.cdf(min(r2w, w2r), n, 0.5)))
    return McNemar(r2w, w2r, p)


def benjamini_hochberg(p_values: ArrayLike) -> NDArray[np.float64]:
    """BH-adjusted p-values (false discovery rate), for the many per-subject tests of one task."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return np.asarray(sps.false_discovery_control(p, method="bh"), dtype=np.float64)
