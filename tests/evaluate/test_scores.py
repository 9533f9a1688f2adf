"""Probabilistic scores (hpcds.evaluate.scores), regions and the streaming accumulator.

(The region tests live here too: a tests/evaluate/test_regions.py would clash with
tests/grids/test_regions.py under pytest's default import mode, as tests/ has no __init__.py.)
"""

import numpy as np
import pytest
import scoringrules as sr

from hpcds.evaluate.accumulate import ScoreAccumulator
from hpcds.evaluate.regions import Region, regions_for_grid
from hpcds.evaluate.scores import (
    crps_ensemble,
    ensemble_mean_rmse,
    ensemble_spread,
    rank_histogram,
    spread_skill_ratio,
    weighted_mean,
)
from hpcds.grids import grid_from_name


def _random_case(rng, m=7, shape=(3, 50), discrete=False):
    ens = rng.normal(size=(m,) + shape)
    obs = rng.normal(size=shape)
    if discrete:  # many ties, between members and with the observation
        ens, obs = np.round(ens), np.round(obs)
    return ens, obs


@pytest.mark.parametrize("estimator", ["fair", "nrg", "pwm", "qd", "int", "akr", "akr_circperm"])
@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("m", [2, 5, 16])
def test_crps_matches_scoringrules(estimator, discrete, m):
    rng = np.random.default_rng(m)
    ens, obs = _random_case(rng, m=m, discrete=discrete)
    ours = crps_ensemble(ens, obs, estimator=estimator)
    ref = sr.crps_ensemble(obs, ens, m_axis=0, estimator=estimator, backend="numpy")
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)
    assert ours.shape == obs.shape


def test_crps_float32_input_and_pair_identity():
    rng = np.random.default_rng(0)
    ens, obs = _random_case(rng, m=9)
    brute = np.abs(ens[:, None] - ens[None]).sum(axis=(0, 1))
    fair = np.abs(ens - obs).mean(0) - brute / (2 * 9 * 8)
    np.testing.assert_allclose(crps_ensemble(ens.astype(np.float32), obs.astype(np.float32)),
                               fair, rtol=1e-5)


def test_one_member_standard_crps_is_mae():
    rng = np.random.default_rng(1)
    ens, obs = _random_case(rng, m=1)
    np.testing.assert_allclose(crps_ensemble(ens, obs, "nrg"), np.abs(ens[0] - obs))


def test_almost_fair_limits_and_blend():
    rng = np.random.default_rng(2)
    ens, obs = _random_case(rng, m=6)
    fair, nrg = crps_ensemble(ens, obs, "fair"), crps_ensemble(ens, obs, "nrg")
    np.testing.assert_allclose(crps_ensemble(ens, obs, "almost_fair", alpha=1.0), fair)
    np.testing.assert_allclose(crps_ensemble(ens, obs, "almost_fair", alpha=0.0), nrg)
    a = 0.95
    np.testing.assert_allclose(crps_ensemble(ens, obs, "almost_fair", alpha=a),
                               a * fair + (1 - a) * nrg)
    # Lang et al. (2024) pair form: 1/(2M(M-1)) Σ_{i≠j} (|x_i-y| + |x_j-y| - (1-ε)|x_i-x_j|)
    m, eps = 6, (1 - a) / 6
    tot = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                tot = tot + np.abs(ens[i] - obs) + np.abs(ens[j] - obs) \
                    - (1 - eps) * np.abs(ens[i] - ens[j])
    np.testing.assert_allclose(crps_ensemble(ens, obs, "almost_fair", alpha=a),
                               tot / (2 * m * (m - 1)))


def test_unknown_estimator():
    with pytest.raises(ValueError):
        crps_ensemble(np.zeros((2, 3)), np.zeros(3), "nope")


@pytest.mark.parametrize("m", [2, 20])
def test_fair_crps_unbiased_standard_biased(m):
    """Members and truth i.i.d. N(0,1): E[CRPS(N(0,1), y)] = 1/sqrt(pi) for y ~ N(0,1)."""
    rng = np.random.default_rng(10 + m)
    n = 200_000 if m == 2 else 40_000
    ens = rng.normal(size=(m, n))
    obs = rng.normal(size=n)
    expected = 1 / np.sqrt(np.pi)
    fair = crps_ensemble(ens, obs, "fair")
    se = fair.std() / np.sqrt(n)
    assert abs(fair.mean() - expected) < 4 * se
    nrg = crps_ensemble(ens, obs, "nrg")
    # standard estimator is biased high by E|X-X'|/(2M) = 1/(M sqrt(pi))
    bias = nrg.mean() - expected
    assert bias > 4 * nrg.std() / np.sqrt(n)
    assert abs(bias - 1 / (m * np.sqrt(np.pi))) < 4 * nrg.std() / np.sqrt(n) + 0.01 / m


def test_weighted_mean_and_rmse_spread():
    rng = np.random.default_rng(3)
    ens, obs = _random_case(rng, m=4, shape=(2, 10))
    w = rng.random(10)
    v = rng.normal(size=(2, 10))
    np.testing.assert_allclose(weighted_mean(v, w), (v * w).sum(-1) / w.sum())
    np.testing.assert_allclose(weighted_mean(v), v.mean(-1))
    mse = ((ens.mean(0) - obs) ** 2 * w).sum(-1) / w.sum()
    assert np.isclose(ensemble_mean_rmse(ens, obs, w), np.sqrt(mse.mean()))
    np.testing.assert_allclose(ensemble_mean_rmse(ens, obs, w, reduce_leading=False), np.sqrt(mse))
    var = (ens.var(0, ddof=1) * w).sum(-1) / w.sum()
    assert np.isclose(ensemble_spread(ens, w), np.sqrt(var.mean()))


def test_spread_skill_calibrated_and_underdispersive():
    rng = np.random.default_rng(4)
    m, n = 5, 100_000
    centre = rng.normal(size=n)  # predictable part; members and truth exchangeable around it
    ens = centre + rng.normal(size=(m, n))
    obs = centre + rng.normal(size=n)
    assert abs(spread_skill_ratio(ens, obs) - 1.0) < 0.02
    narrow = centre + 0.5 * rng.normal(size=(m, n))
    assert spread_skill_ratio(narrow, obs) < 0.7


def _chi2_pvalue(counts):
    from scipy.stats import chisquare
    return chisquare(counts).pvalue


def test_rank_histogram_flat_and_u_shaped():
    rng = np.random.default_rng(5)
    m, n = 9, 50_000
    ens, obs = rng.normal(size=(m, n)), rng.normal(size=n)
    counts = rank_histogram(ens, obs, rng)
    assert counts.shape == (m + 1,) and counts.sum() == n
    assert _chi2_pvalue(counts) > 1e-3
    under = rank_histogram(0.3 * ens, obs, rng)
    assert _chi2_pvalue(under) < 1e-10
    assert under[0] > 2 * under[m // 2] and under[-1] > 2 * under[m // 2]


def test_rank_histogram_random_tie_breaking():
    rng = np.random.default_rng(6)
    m, n = 4, 40_000
    # all members and obs equal: every rank 0..M equally likely
    counts = rank_histogram(np.zeros((m, n)), np.zeros(n), rng)
    assert _chi2_pvalue(counts) > 1e-3 and counts.min() > 0
    # discrete calibrated: values in {0,1,2} i.i.d. for members and obs -> flat histogram
    ens = rng.integers(0, 3, size=(m, n)).astype(float)
    obs = rng.integers(0, 3, size=n).astype(float)
    assert _chi2_pvalue(rank_histogram(ens, obs, rng)) > 1e-3
    # obs tied with exactly 2 members, one member below: rank ∈ {1, 2, 3} uniformly
    ens = np.tile(np.array([[-1.0], [0.0], [0.0], [5.0]]), (1, 30_000))
    counts = rank_histogram(ens, np.zeros(30_000), rng)
    assert counts[0] == 0 and counts[4] == 0 and _chi2_pvalue(counts[1:4]) > 1e-3


# ---------------------------------------------------------------- regions


def test_regions_global_o16():
    grid = grid_from_name("O16")
    regions = {r.name: r for r in regions_for_grid(grid)}
    assert list(regions) == ["global", "n_extratropics", "tropics", "s_extratropics"]
    lat = grid.latitudes
    assert regions["global"].mask.all()
    np.testing.assert_array_equal(regions["n_extratropics"].mask, lat >= 20)
    np.testing.assert_array_equal(regions["tropics"].mask, np.abs(lat) < 20)
    np.testing.assert_array_equal(regions["s_extratropics"].mask, lat <= -20)
    bands = sum(regions[k].mask.astype(int) for k in ("n_extratropics", "tropics",
                                                      "s_extratropics"))
    assert (bands == 1).all()
    # area share of |lat| < 20 is sin(20°) on the sphere (Gaussian rows approximate it)
    share = grid.area_weights[regions["tropics"].mask].sum()
    assert abs(share - np.sin(np.deg2rad(20))) < 0.05


def test_regions_limited_area_with_terrain():
    grid = grid_from_name("1.0/1.0", "alps")
    assert [r.name for r in regions_for_grid(grid)] == ["domain"]
    oro = np.linspace(0, 3000, grid.size)
    regions = {r.name: r for r in regions_for_grid(grid, orography_m=oro)}
    assert list(regions) == ["domain", "terrain>1500m"]
    np.testing.assert_array_equal(regions["terrain>1500m"].mask, oro > 1500)
    regions = {r.name: r for r in regions_for_grid(grid, oro, terrain_mask_m=2000)}
    np.testing.assert_array_equal(regions["terrain>2000m"].mask, oro > 2000)
    # empty regions are dropped
    assert [r.name for r in regions_for_grid(grid, np.zeros(grid.size))] == ["domain"]
    with pytest.raises(ValueError):
        regions_for_grid(grid, np.zeros(3))


# ---------------------------------------------------------------- accumulator


def _accumulator_case():
    rng = np.random.default_rng(7)
    m, v, n, d = 6, 2, 120, 3
    w = rng.random(n)
    regions = [Region("all", np.ones(n, bool)), Region("half", np.arange(n) < 70),
               Region("odd", np.arange(n) % 2 == 1)]
    ens = rng.normal(size=(d, m, v, n))
    obs = rng.normal(size=(d, v, n))
    return m, ["t2m", "tp"], regions, w, ens, obs


def test_accumulator_matches_direct_and_merge():
    m, variables, regions, w, ens, obs = _accumulator_case()
    dates = [np.datetime64("2020-01-01") + np.timedelta64(i, "D") for i in range(3)]
    full = ScoreAccumulator(variables, regions, w, m, alpha=0.9)
    for i, date in enumerate(dates):
        full.update(ens[i], obs[i], date)
    res = full.result()
    import json
    json.dumps(res)
    for k, var in enumerate(variables):
        for region in regions:
            wr = np.where(region.mask, w, 0.0)
            r = res[var][region.name]
            e, o = ens[:, :, k][:, :, :], obs[:, k]  # (D, M, N), (D, N)
            e = np.moveaxis(e, 1, 0)  # (M, D, N)
            for key, est in (("crps_fair", "fair"), ("crps_standard", "nrg")):
                direct = weighted_mean(crps_ensemble(e, o, est), wr).mean()
                assert np.isclose(r[key], direct)
            af = weighted_mean(crps_ensemble(e, o, "almost_fair", alpha=0.9), wr).mean()
            assert np.isclose(r["crps_almost_fair"], af)
            assert np.isclose(r["rmse"], ensemble_mean_rmse(e, o, wr))
            assert np.isclose(r["spread"], ensemble_spread(e, wr))
            assert np.isclose(r["spread_skill"], spread_skill_ratio(e, o, wr))
            assert sum(r["rank_histogram"]) == 3 * region.size
            assert r["area_fraction"] == pytest.approx(1.0)
            assert list(r["per_date"]) == [str(np.datetime64(d, "s")) for d in dates]
            per = r["per_date"][str(np.datetime64(dates[1], "s"))]
            assert np.isclose(per["rmse"], ensemble_mean_rmse(e[:, 1], o[1], wr))
    # split by cells (two "ranks"), dates in different order, then merged
    a = ScoreAccumulator(variables, regions, w, m, alpha=0.9, seed=1)
    b = ScoreAccumulator(variables, regions, w, m, alpha=0.9, seed=2)
    idx = np.arange(40, 120)
    for i in (2, 0, 1):
        a.update(ens[i][:, :, :40], obs[i][:, :40], dates[i], cells=slice(0, 40))
        b.update(ens[i][:, :, idx], obs[i][:, idx], dates[i], cells=idx)
    merged = a.merge(b).result()
    for var in variables:
        for region in regions:
            x, y = merged[var][region.name], res[var][region.name]
            for key in ("crps_fair", "crps_standard", "crps_almost_fair", "rmse", "spread",
                        "spread_skill"):
                assert np.isclose(x[key], y[key])
            assert sum(x["rank_histogram"]) == sum(y["rank_histogram"])
            assert x["per_date"].keys() == y["per_date"].keys()


def test_accumulator_partial_coverage_and_errors():
    m, variables, regions, w, ens, obs = _accumulator_case()
    acc = ScoreAccumulator(variables, regions, w, m)
    acc.update(ens[0][:, :, :60], obs[0][:, :60], "2020-01-01", cells=slice(0, 60))
    frac = acc.result()["t2m"]["all"]["area_fraction"]
    assert np.isclose(frac, w[:60].sum() / w.sum())
    with pytest.raises(ValueError):
        acc.update(ens[0][:3], obs[0], "2020-01-02")  # wrong member count
    with pytest.raises(ValueError):
        acc.update(ens[0][:, :, :10], obs[0][:, :10], "2020-01-02", cells=slice(0, 20))


def test_accumulator_deterministic_baseline():
    _, variables, regions, w, ens, obs = _accumulator_case()
    acc = ScoreAccumulator(variables, regions, w, 1)
    acc.update(ens[0][:1], obs[0], "2020-01-01")
    r = acc.result()["tp"]["all"]
    mae = weighted_mean(np.abs(ens[0][0, 1] - obs[0][1]), w)
    for key in ("crps_fair", "crps_standard", "crps_almost_fair"):
        assert np.isclose(r[key], mae)
    assert r["spread"] == 0.0 and r["spread_skill"] == 0.0
    assert len(r["rank_histogram"]) == 2


def test_accumulator_chunking_and_missing_observations():
    m, variables, regions, w, ens, obs = _accumulator_case()
    ref = ScoreAccumulator(variables, regions, w, m)
    chunked = ScoreAccumulator(variables, regions, w, m, chunk_cells=7)
    for acc in (ref, chunked):
        acc.update(ens[0], obs[0], "d0")
    a, b = ref.result(), chunked.result()
    for key in ("crps_fair", "crps_standard", "rmse", "spread"):
        assert np.isclose(a["tp"]["odd"][key], b["tp"]["odd"][key])
    # NaN observations: same as leaving those cells out
    gappy = obs[0].copy()
    gappy[0, :10] = np.nan
    acc = ScoreAccumulator(variables, regions, w, m)
    acc.update(ens[0], gappy, "d0")
    res = acc.result()["t2m"]["all"]
    direct = weighted_mean(crps_ensemble(ens[0][:, 0, 10:], obs[0][0, 10:]), w[10:])
    assert np.isclose(res["crps_fair"], direct)
    assert sum(res["rank_histogram"]) == 110
    assert np.isclose(res["area_fraction"], w[10:].sum() / w.sum())
    assert np.isclose(acc.result()["tp"]["all"]["area_fraction"], 1.0)
