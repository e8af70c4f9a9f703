"""Paired statistics against hand-worked cases and scipy's own implementations."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from iaa_eval.metrics.stats import (
    benjamini_hochberg,
    bootstrap_means,
    flips,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap,
)


@pytest.mark.parametrize(
    ("r2w", "w2r", "expected"),
    [
        (0, 0, 1.0),  # no discordant pair: nothing to test
        (1, 0, 1.0),  # 2 * P[X <= 0 | n=1] = 2 * 1/2
        (5, 0, 2 / 32),  # 2 * (1/2)^5
        (10, 2, 2 * (1 + 12 + 66) / 4096),  # 2 * P[X <= 2 | n=12]
        (3, 3, 1.0),  # symmetric: capped at 1
    ],
)
def test_mcnemar_hand_worked(r2w: int, w2r: int, expected: float) -> None:
    base = [1] * r2w + [0] * w2r + [1] * 7 + [0] * 4  # concordant pairs do not matter
    model = [0] * r2w + [1] * w2r + [1] * 7 + [0] * 4
    result = mcnemar_exact(base, model)
    assert (result.right_to_wrong, result.wrong_to_right) == (r2w, w2r)
    assert result.p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        a = rng.random(300) < 0.6
        b = np.where(rng.random(300) < 0.15, ~a, a)
        r2w, w2r = flips(a, b)
        expected = sps.binomtest(r2w, r2w + w2r, 0.5).pvalue if r2w + w2r else 1.0
        assert mcnemar_exact(a, b).p_value == pytest.approx(expected, rel=1e-9)


def test_paired_bootstrap_degenerate_cases() -> None:
    same = paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1])
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    assert not same.excludes_zero()
    shifted = paired_bootstrap([0.0, 0.5, 1.0], [0.25, 0.75, 1.25])  # every item +0.25
    assert shifted.delta == shifted.low == shifted.high == pytest.approx(0.25)
    assert shifted.excludes_zero()


def test_paired_bootstrap_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random(400) < 0.7).astype(float)
    b = np.where(rng.random(400) < 0.2, 1 - a, a)
    ours = paired_bootstrap(a, b, resamples=20000, seed=1)
    theirs = sps.bootstrap(
        (a, b), lambda x, y, axis: np.mean(y - x, axis=axis), paired=True, vectorized=True,
        n_resamples=20000, method="percentile", random_state=np.random.default_rng(2),
    ).confidence_interval
    assert ours.delta == pytest.approx(float(np.mean(b - a)))
    assert ours.low == pytest.approx(theirs.low, abs=0.006)
    assert ours.high == pytest.approx(theirs.high, abs=0.006)
    # normal-theory check: the interval is about +-1.96 standard errors wide
    se = np.std(b - a, ddof=1) / np.sqrt(a.size)
    assert ours.high - ours.low == pytest.approx(2 * 1.96 * se, rel=0.08)


def test_bootstrap_is_seeded_and_both_paths_agree() -> None:
    rng = np.random.default_rng(0)
    continuous = rng.normal(size=500)  # > 256 distinct values: index resampling path
    discrete = np.round(continuous)  # few distinct values: multinomial counts path
    assert np.array_equal(bootstrap_means(discrete, 1000, seed=4), bootstrap_means(discrete, 1000, seed=4))
    assert np.array_equal(bootstrap_means(continuous, 1000, seed=4), bootstrap_means(continuous, 1000, seed=4))
    for values in (continuous, discrete):
        reps = bootstrap_means(values, 4000, seed=5)
        assert reps.mean() == pytest.approx(values.mean(), abs=0.01)
        assert reps.std() == pytest.approx(values.std() / np.sqrt(values.size), rel=0.1)


def test_mean_ci_and_errors() -> None:
    ci = mean_ci([1, 1, 1, 0], resamples=1000)
    assert ci.delta == 0.75 and 0.0 <= ci.low <= 0.75 <= ci.high <= 1.0
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        paired_bootstrap([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_means([])


def test_benjamini_hochberg_matches_hand_computation() -> None:
    # sorted p: 0.01, 0.02, 0.03, 0.5 -> p*m/rank = 0.04, 0.04, 0.04, 0.5
    assert benjamini_hochberg([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.04, 0.04, 0.5, 0.04])
    assert benjamini_hochberg([]).size == 0


def test_stats_imports_no_torch() -> None:
    code = "import sys, iaa_eval.metrics.stats; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
