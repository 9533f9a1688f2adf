"""Extremes: Hazen quantiles, bootstrap intervals, Q-Q data, exceedances, top-k streaming."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hpcds.evaluate.extremes import (TailSampler, exceedance_frequencies, qq_data,
                                     qq_probabilities, quantiles_with_bootstrap,
                                     weighted_quantile)

QS = (0.9, 0.99, 0.999, 0.9999)


def test_quantiles_match_numpy_and_the_distribution():
    rng = np.random.default_rng(0)
    x = rng.gamma(0.5, 2.0, size=1_000_000)
    np.testing.assert_allclose(weighted_quantile(x, QS),
                               np.quantile(x, QS, method="hazen"), rtol=1e-14)
    # equal weights: the weighted path is the same quantile
    np.testing.assert_allclose(weighted_quantile(x, QS, np.full(x.size, 0.3)),
                               np.quantile(x, QS, method="hazen"), rtol=1e-9)  # cumsum
    np.testing.assert_allclose(np.quantile(x, QS), stats.gamma(0.5, scale=2.0).ppf(QS),
                               rtol=0.03)


def test_integer_weights_equal_repeated_samples():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5000)
    w = rng.integers(1, 4, size=x.size)
    got = weighted_quantile(x, QS[:3], w.astype(float))
    ref = np.quantile(np.repeat(x, w), QS[:3], method="hazen")
    # the weighted positions differ from those of the repeated sample by < one step
    step = np.diff(np.sort(np.repeat(x, w)))
    np.testing.assert_allclose(got, ref, atol=3 * np.max(step[-200:]))


def test_bootstrap_interval_contains_estimate_and_weights_work():
    rng = np.random.default_rng(2)
    x = rng.exponential(size=20_000)
    out = quantiles_with_bootstrap(x, qs=(0.99, 0.999), n_boot=100, rng=3)
    for q, (est, lo, hi) in out.items():
        assert lo <= est <= hi
        assert est == pytest.approx(np.quantile(x, q, method="hazen"))
    wout = quantiles_with_bootstrap(x, qs=(0.99,), n_boot=50, rng=3,
                                    area_weights=np.ones(x.size))
    assert wout[0.99][0] == pytest.approx(out[0.99][0])


def test_bootstrap_interval_covers_the_true_quantile():
    rng = np.random.default_rng(4)
    q, level, trials = 0.99, 0.95, 40
    truth = stats.expon.ppf(q)
    covered = 0
    for _ in range(trials):
        x = rng.exponential(size=4000)
        _, lo, hi = quantiles_with_bootstrap(x, qs=(q,), n_boot=200, rng=rng,
                                             level=level)[q]
        covered += lo <= truth <= hi
    assert covered >= 0.85 * trials, covered  # nominal 38 of 40; 36..39 over 8 seeds


def test_qq_data_emphasises_the_tail():
    rng = np.random.default_rng(5)
    truth = rng.standard_normal(100_000)
    fc = 2.0 * rng.standard_normal(50_000) + 1.0
    qt, qf = qq_data(fc, truth, n_points=60)
    assert qt.shape == qf.shape == (60,)
    p = qq_probabilities(60, 50_000)
    assert p[0] == 0.0 and p[-1] == pytest.approx(1 - 1 / 50_000)
    assert np.sum(p > 0.99) > np.sum(p < 0.5)  # most points in the upper tail
    mid = (p > 0.05) & (p < 0.999)
    np.testing.assert_allclose(qf[mid], 2.0 * qt[mid] + 1.0, atol=0.15)


def test_exceedance_frequencies_match_survival_function():
    rng = np.random.default_rng(6)
    x = rng.exponential(size=(4, 250_000))
    thr = np.array([0.5, 1.0, 3.0, 6.0])
    got = exceedance_frequencies(x, thr)
    sf = stats.expon.sf(thr)
    assert np.all(np.abs(got - sf) <= 4 * np.sqrt(sf * (1 - sf) / x.size))  # 4 binomial σ
    # weighted: weight 0 on half the values leaves the other half's frequency
    w = np.zeros(x.shape[-1])
    w[::2] = 1.0
    np.testing.assert_allclose(exceedance_frequencies(x, thr, w),
                               exceedance_frequencies(x[:, ::2], thr))
    assert exceedance_frequencies([1.0, 2.0, 3.0], [2.0]) == pytest.approx(1 / 3)


def test_tail_sampler_equals_direct_quantile_above_its_bound():
    rng = np.random.default_rng(7)
    batches = [rng.lognormal(size=rng.integers(1000, 20_000)) for _ in range(30)]
    k = 500
    sampler = TailSampler(k)
    for b in batches[:15]:
        sampler.update(b)
    other = TailSampler(k)
    for b in batches[15:]:
        other.update(b)
    sampler.merge(other)
    allx = np.concatenate(batches)
    n = allx.size
    assert sampler.count == n
    assert sampler.exact_from() == pytest.approx(1 - (k - 0.5) / n)
    qs = np.array([1 - k / n + 1e-9 + 0.5 / n, 0.999, 0.9999, 1.0])
    qs = qs[qs >= sampler.exact_from()]
    np.testing.assert_allclose(sampler.quantile(qs), np.quantile(allx, qs, method="hazen"),
                               rtol=1e-12)
    with pytest.raises(ValueError):
        sampler.quantile(0.5)


def test_weighted_tail_sampler_equals_weighted_quantile():
    rng = np.random.default_rng(8)
    x = rng.gamma(2.0, size=(10, 3000))
    w = rng.uniform(0.5, 1.5, size=3000)  # area weights, the same for every date
    sampler = TailSampler(300)
    for row in x:
        sampler.update(row, w)
    qs = [0.995, 0.999, 0.9999]
    assert min(qs) >= sampler.exact_from()
    full_w = np.broadcast_to(w, x.shape).ravel()
    np.testing.assert_allclose(sampler.quantile(qs), weighted_quantile(x.ravel(), qs, full_w),
                               rtol=1e-10)
