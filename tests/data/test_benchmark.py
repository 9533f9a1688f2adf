"""The synthetic benchmark: its oracle samples the law it claims, the truth is a draw of that
law, and generation is deterministic, shard-invariant and honest about missing terrain.

References are written out here from the law's formulas (see hpcds/data/benchmark_law.py),
not computed by the functions under test.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.fft import dctn
from scipy.integrate import quad

from hpcds.config.load import load_config
from hpcds.config.schema import GridConfig, HpcdsConfig
from hpcds.data.benchmark import build_law, generate_benchmark, oracle_sample
from hpcds.data.benchmark_law import (
    STREAM_ORACLE,
    VARIABLES,
    heavy_tail,
    sinh_arcsinh_kurtosis,
    sinh_arcsinh_variance,
)
from hpcds.data.store import open_store
from hpcds.errors import StoreError, UserError
from hpcds.grids import coarsening_matrix, interpolation_matrix
from hpcds.grids.geometry import EARTH_RADIUS_M

# the law's constants, restated (module docstring of hpcds.data.benchmark_law)
LAPSE = 6.5e-3  # K/m
T_NOISE, T_NOISE_PER_M = 0.4, 0.8e-3  # K, K/m
SPEEDUP, H0 = 0.3, 500.0
WIND_NOISE, WIND_NOISE_PER_SPEED = 0.3, 0.1
MSL_NOISE = 30.0  # Pa
PRECIP_ENHANCEMENT, PRECIP_LOG_STD = 0.5, 0.6


def benchmark_config(tmp: Path, **benchmark) -> HpcdsConfig:
    """The tiny preset's benchmark: HR Alps 0.125°, LR 1° with a 2° margin, 40 dates."""
    return load_config("tiny", [f"run.out_dir={tmp}",
                                *(f"benchmark.{key}={value}" for key, value in benchmark.items())])


def read_all(store) -> np.ndarray:
    return store.read(slice(None))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(cfg, law, {"lr", "hr", "forcings"} → Store) of the default benchmark, written once."""
    cfg = benchmark_config(tmp_path_factory.mktemp("benchmark"))
    paths = generate_benchmark(cfg, progress=False, config_yaml="benchmark: {seed: 1}\n")
    return cfg, build_law(cfg), {role: open_store(path) for role, path in paths.items()}


@pytest.fixture(scope="module")
def law(generated):
    return generated[1]


@pytest.fixture(scope="module")
def operators(law):
    """I (n_hr, n_lr), C (n_lr, n_hr) and the covered mask, from hpcds.grids directly."""
    hr, lr = law.geometry.hr, law.geometry.lr
    coarsen, covered = coarsening_matrix(hr, lr)
    return interpolation_matrix(lr, hr), coarsen, np.asarray(covered, bool)


def closed_form(interp: np.ndarray, fine_orog: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E and sd of HR | LR (n_var, n) from I x_LR (n_var, n) and z' (n,)."""
    t2m, u, v, msl, tp = interp
    shape = np.tanh(fine_orog / H0)
    mean_tp = tp * (1 + PRECIP_ENHANCEMENT * shape)
    mean = np.stack([t2m - LAPSE * fine_orog, u * (1 + SPEEDUP * shape),
                     v * (1 + SPEEDUP * shape), msl, mean_tp])
    wind = WIND_NOISE + WIND_NOISE_PER_SPEED * np.sqrt(u ** 2 + v ** 2)
    std = np.stack([T_NOISE + T_NOISE_PER_M * np.abs(fine_orog), wind, wind,
                    np.full_like(u, MSL_NOISE),
                    mean_tp * np.sqrt(np.exp(PRECIP_LOG_STD ** 2) - 1)])
    return mean, std


@pytest.fixture(scope="module")
def moments(law, operators):
    """400 oracle members on every 11th HR cell of one date, and the closed-form moments."""
    interp, _, _ = operators
    date, cells = 3, np.arange(0, law.geometry.hr.size, 11)
    lr = law.lr_state(date)
    members = oracle_sample(law, lr, date, n=400, seed=11, cells=cells)
    mean, std = closed_form((interp[cells] @ lr.T).T, law.geometry.fine_orog[cells])
    return members, mean, std


# ------------------------------------------------------------------------ heavy tails
@pytest.mark.parametrize("tau", [0.0, 0.3, 0.8])
def test_sinh_arcsinh_normalisation_matches_quadrature(tau):
    gauss = stats.norm.pdf
    moment = lambda p: quad(lambda z: np.sinh((1 + tau) * np.arcsinh(z)) ** p * gauss(z),
                            -np.inf, np.inf)[0]
    assert sinh_arcsinh_variance(tau) == pytest.approx(moment(2), rel=1e-8)
    assert sinh_arcsinh_kurtosis(tau) == pytest.approx(moment(4) / moment(2) ** 2, rel=1e-8)
    unit = quad(lambda z: heavy_tail(np.array([z]), tau)[0] ** 2 * gauss(z), -np.inf, np.inf)
    assert unit[0] == pytest.approx(1.0, rel=1e-8)


# ------------------------------------------------------------------------ terrain
def test_lr_terrain_is_the_coarse_grained_hr_terrain(law, operators):
    interp, coarsen, covered = operators
    g = law.geometry
    assert g.orog_hr.min() >= 0.0 and g.orog_hr.max() > 2500.0  # real Alps, sea at 0 m
    np.testing.assert_allclose(g.orog_lr[covered], (coarsen @ g.orog_hr)[covered], rtol=1e-12)
    np.testing.assert_allclose(g.land_lr[covered], (coarsen @ g.land_hr)[covered], atol=1e-12)
    np.testing.assert_allclose(g.fine_orog, g.orog_hr - interp @ g.orog_lr, atol=1e-9)
    assert np.abs(g.fine_orog).max() > 500.0  # valleys and ridges the LR grid cannot see


# ------------------------------------------------------------------------ (a) coarse part
def test_oracle_coarse_part_is_the_lr_state(law, operators):
    interp, coarsen, covered = operators
    coarse, lr, fine = [], [], []
    for date in range(0, 40, 5):
        state = law.lr_state(date)
        member = oracle_sample(law, state, date, n=1, seed=3)[0]
        coarse.append((coarsen @ member.T).T[:, covered])
        lr.append(state[:, covered])
        fine.append(member - (interp @ state.T).T)
    coarse, lr, fine = np.stack(coarse), np.stack(lr), np.stack(fine)  # (date, var, cell)
    for v, name in enumerate(VARIABLES):
        a = coarse[:, v] - coarse[:, v].mean(axis=0)  # anomalies: per-cell mean over dates
        b = lr[:, v] - lr[:, v].mean(axis=0)
        correlation = (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())
        bias = np.mean(coarse[:, v] - lr[:, v])
        amplitude = np.sqrt(np.mean(fine[:, v] ** 2))  # rms of HR − I x_LR
        assert correlation > 0.85, name
        assert abs(bias) < 0.25 * amplitude, name


# ------------------------------------------------------------------------ (b) moments
def test_oracle_moments_match_the_closed_form(moments):
    members, mean, std = moments
    n = members.shape[0]
    for v, name in enumerate(VARIABLES):
        live = std[v] > 0  # tp: dry cells are exactly zero (tested below)
        z = (members[:, v, live].mean(axis=0) - mean[v, live]) / (std[v, live] / np.sqrt(n))
        assert np.abs(z).max() < 5.5, name
        assert 0.6 < np.mean(z ** 2) < 1.6, name
        if name == "tp":
            continue  # the sample sd of a lognormal is too noisy: tp's log is checked below
        ratio = members[:, v, live].std(axis=0, ddof=1) / std[v, live]
        assert abs(ratio.mean() - 1) < 0.03, name
        assert np.abs(ratio - 1).max() < 0.3, name
    # tp / E[tp | LR] = exp(s g − s²/2): its log is Gaussian, mean −s²/2, sd s
    wet = std[4] > 0
    log_ratio = np.log(members[:, 4, wet] / mean[4, wet])
    z = (log_ratio.mean(axis=0) + PRECIP_LOG_STD ** 2 / 2) / (PRECIP_LOG_STD / np.sqrt(n))
    assert np.abs(z).max() < 5.5 and 0.6 < np.mean(z ** 2) < 1.6
    ratio = log_ratio.std(axis=0, ddof=1) / PRECIP_LOG_STD
    assert abs(ratio.mean() - 1) < 0.03 and np.abs(ratio - 1).max() < 0.3


# ------------------------------------------------------------------------ (c) truth ~ law
def test_truth_rank_among_oracle_members_is_uniform(generated):
    _, law, stores = generated
    rng = np.random.default_rng(0)
    cells = np.arange(0, law.geometry.hr.size, 13)
    n_members = 19
    ranks = {v: [] for v in VARIABLES}
    lr_all, hr_all = read_all(stores["lr"])[:, :, 0], read_all(stores["hr"])[:, :, 0]
    for date in range(len(law.dates)):
        lr = lr_all[date].astype(np.float64)
        truth = hr_all[date][:, cells]
        ens = oracle_sample(law, lr, date, n_members, seed=5, cells=cells).astype(np.float32)
        below, ties = (ens < truth).sum(axis=0), (ens == truth).sum(axis=0)
        rank = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
        for v, name in enumerate(VARIABLES):
            keep = ties[v] < n_members  # tp on dry cells: all members and truth are 0
            ranks[name].append(rank[v, keep])
    pooled = []
    for name, values in ranks.items():
        counts = np.bincount(np.concatenate(values), minlength=n_members + 1)
        assert stats.chisquare(counts).pvalue > 1e-4, (name, counts)
        pooled.append(counts)
    assert stats.chisquare(np.sum(pooled, axis=0)).pvalue > 1e-3


def test_truth_and_lr_stores_hold_the_law(generated):
    _, law, stores = generated
    for date in (0, 17, 39):
        lr = law.lr_state(date)
        np.testing.assert_array_equal(stores["lr"].read(date)[0, :, 0], lr.astype(np.float32))
        np.testing.assert_array_equal(stores["hr"].read(date)[0, :, 0],
                                      law.sample(lr, date).astype(np.float32))
    assert not np.array_equal(law.sample(law.lr_state(5), 5),
                              law.sample(law.lr_state(5), 5, stream=STREAM_ORACLE))


# ------------------------------------------------------------------------ (d) spectrum
def spectral_slope(law, n_fields: int = 6) -> float:
    """Least-squares slope of log E(k) against log k, E the DCT power spectrum (Denis et al.
    2002) of noise fields on the regular HR grid, summed over annuli of width Δk."""
    grid = law.geometry.hr
    ny, nx = grid.field_shape
    lat = grid.to_native(grid.latitudes).reshape(ny, nx)
    dlat = np.deg2rad(abs(lat[0, 0] - lat[1, 0]))
    dy, dx = EARTH_RADIUS_M * dlat, EARTH_RADIUS_M * dlat * np.cos(np.deg2rad(lat.mean()))
    power = 0.0
    for i in range(n_fields):
        field = grid.to_native(law.noise_field(i, 0)).reshape(ny, nx)
        power = power + dctn(field, norm="ortho") ** 2
    k = np.hypot(*np.meshgrid(np.pi * np.arange(ny) / (ny * dy),
                              np.pi * np.arange(nx) / (nx * dx), indexing="ij"))
    dk = np.pi / min(ny * dy, nx * dx)
    edges = np.arange(0.0, k.max() + dk, dk)
    energy = np.histogram(k, edges, weights=power)[0] / dk
    centre = (edges[1:] + edges[:-1]) / 2
    # resolved band: from 1.5× the noise's lowest wavenumber to 0.8× the coarser Nyquist
    band = (centre > 1.5 * law.noise.k_min) & (centre < 0.8 * np.pi / max(dx, dy))
    return float(np.polyfit(np.log(centre[band]), np.log(energy[band]), 1)[0])


@pytest.mark.parametrize("beta", [3.0, 5 / 3])
def test_noise_spectrum_has_the_configured_slope(tmp_path, law, beta):
    other = law if beta == 3.0 else build_law(benchmark_config(tmp_path, noise_slope=beta))
    assert spectral_slope(other) == pytest.approx(-beta, abs=0.2)


def test_noise_fields_are_unit_gaussian_pointwise(law):
    cells = np.arange(0, law.geometry.hr.size, 97)
    values = np.stack([law.noise_field(d, v, cells=cells) for d in range(40) for v in range(5)])
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05
    assert abs(stats.kurtosis(values.ravel(), fisher=False) - 3) < 0.3


# ------------------------------------------------------------------------ (e) tails, tp ≥ 0
def test_precipitation_is_nonnegative_and_zero_where_lr_is_dry(generated, operators):
    _, law, stores = generated
    interp, _, _ = operators
    tp = read_all(stores["hr"])[:, VARIABLES.index("tp"), 0]
    lr_tp = read_all(stores["lr"])[:, VARIABLES.index("tp"), 0].astype(np.float64)
    assert tp.min() >= 0.0
    dry = (interp @ lr_tp.T).T == 0
    assert dry.any() and (~dry).any()
    assert np.all(tp[dry] == 0) and np.all(tp[~dry] > 0)


def test_noise_is_heavy_tailed_when_tail_strength_is_positive(moments, tmp_path, operators):
    members, mean, std = moments
    standard = (members - mean) / np.where(std > 0, std, 1.0)
    kurt_2t = stats.kurtosis(standard[:, 0].ravel(), fisher=False)
    a = 1.3  # tail_strength 0.3
    m2, m4 = (quad(lambda z: np.sinh(a * np.arcsinh(z)) ** p * stats.norm.pdf(z), -np.inf,
                   np.inf)[0] for p in (2, 4))
    assert kurt_2t > 3.3 and kurt_2t == pytest.approx(m4 / m2 ** 2, abs=0.5)
    wet = std[4] > 0
    assert stats.kurtosis(standard[:, 4, wet].ravel(), fisher=False) > 5.0
    assert stats.skew(standard[:, 4, wet].ravel()) > 1.0
    # control: tail_strength 0 is Gaussian
    gaussian = build_law(benchmark_config(tmp_path, tail_strength=0.0))
    interp, _, _ = operators
    cells = np.arange(0, gaussian.geometry.hr.size, 23)
    lr = gaussian.lr_state(3)
    draws = oracle_sample(gaussian, lr, 3, n=200, seed=2, cells=cells)[:, 0]
    mean0, std0 = closed_form((interp[cells] @ lr.T).T, gaussian.geometry.fine_orog[cells])
    kurt_0 = stats.kurtosis(((draws - mean0[0]) / std0[0]).ravel(), fisher=False)
    assert kurt_0 == pytest.approx(3.0, abs=0.2)


# ------------------------------------------------------------------------ sharding
def test_a_shard_gets_exactly_the_slice_of_the_full_sample(law):
    lr = law.lr_state(9)
    full = law.sample(lr, 9, member=2, stream=STREAM_ORACLE, sub_seed=4)
    n = law.geometry.hr.size
    for a, b in [(0, 1), (17, 1000), (n // 2, n), (1, n - 1)]:
        shard = law.sample(lr, 9, member=2, stream=STREAM_ORACLE, sub_seed=4, cells=(a, b))
        np.testing.assert_array_equal(shard, full[:, a:b])
    picked = np.array([n - 1, 3, 3, 1234])
    np.testing.assert_array_equal(oracle_sample(law, lr, 9, 3, seed=4, cells=picked)[2],
                                  full[:, picked])


def test_global_grids_use_3d_noise_and_shard_exactly(tmp_path):
    cfg = benchmark_config(tmp_path, noise_modes=256)
    cfg.grid.hr = GridConfig(name="O32")
    cfg.grid.lr = GridConfig(name="O16")
    law = build_law(cfg)
    assert law.noise.positions.shape == (law.geometry.hr.size, 3)
    lr = law.lr_state(0)
    full = law.sample(lr, 0)
    np.testing.assert_array_equal(law.sample(lr, 0, cells=(1000, 3000)), full[:, 1000:3000])
    fields = np.stack([law.noise_field(d, 1) for d in range(20)])
    assert abs(fields.mean()) < 0.05 and abs(fields.std() - 1) < 0.05
    assert np.isfinite(full).all() and full[4].min() >= 0.0


def test_lr_anomalies_decorrelate_within_a_day(law):
    states = np.stack([law.lr_state(i) for i in range(len(law.dates))])  # 6-hourly
    anomalies = states - states.mean(axis=0)
    for v, name in enumerate(VARIABLES):
        a, b = anomalies[:-4, v].ravel(), anomalies[4:, v].ravel()  # one day apart
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.6, name
        c, d = anomalies[:-1, v].ravel(), anomalies[1:, v].ravel()  # 6 h apart: still related
        assert np.corrcoef(c, d)[0, 1] > 0.5, name


# ------------------------------------------------------------------------ stores
def test_stores_are_self_describing(generated):
    cfg, law, stores = generated
    expected_dates = np.datetime64("2026-01-01T00:00", "s") + np.arange(40) * np.timedelta64(
        6, "h")
    for role in ("lr", "hr"):
        store = stores[role]
        assert store.variables == list(VARIABLES)
        np.testing.assert_array_equal(store.dates, expected_dates)
        assert store.units == {"2t": "K", "10u": "m s-1", "10v": "m s-1", "msl": "Pa",
                               "tp": "m"}
        provenance = store.attrs["provenance"]
        assert provenance["seed"] == 1 and "etopo5.cdf" in provenance["terrain_source"]
        assert "sinh-arcsinh" in provenance["law"]
        assert store.attrs["hpcds_config"] == "benchmark: {seed: 1}\n"
    assert stores["hr"].n_cells == law.geometry.hr.size
    assert stores["lr"].n_cells == law.geometry.lr.size
    static = read_all(stores["forcings"])[0, :, 0]
    assert stores["forcings"].variables == ["orog", "lsm"]
    np.testing.assert_array_equal(static[0], law.geometry.orog_hr.astype(np.float32))
    np.testing.assert_array_equal(static[1], law.geometry.land_hr.astype(np.float32))


def test_generation_is_deterministic_and_seeded(tmp_path):
    def generate(name, seed):
        cfg = benchmark_config(tmp_path / name, n_dates=3, seed=seed)
        paths = generate_benchmark(cfg, progress=False)
        return {role: read_all(open_store(p)) for role, p in paths.items()}

    first, again, other = generate("a", 7), generate("b", 7), generate("c", 8)
    for role in ("lr", "hr", "forcings"):
        np.testing.assert_array_equal(first[role], again[role])
    assert not np.array_equal(first["lr"], other["lr"])
    assert not np.array_equal(first["hr"], other["hr"])
    np.testing.assert_array_equal(first["forcings"], other["forcings"])  # same terrain


def test_existing_stores_need_overwrite(generated):
    cfg = generated[0]
    with pytest.raises(StoreError, match="already exist"):
        generate_benchmark(cfg, progress=False)


def test_missing_terrain_is_a_user_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    cfg = benchmark_config(out, terrain_file=str(tmp_path / "nowhere" / "etopo5.cdf"))
    with pytest.raises(UserError, match=r"ETOPO5 terrain not found at .*nowhere.*apt-get "
                                        r"install --no-install-recommends ferret-datasets"):
        generate_benchmark(cfg, progress=False)
    assert not out.exists() or not any(out.iterdir())
