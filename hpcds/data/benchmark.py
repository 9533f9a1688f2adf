"""The synthetic benchmark: build its law on the configured grids, write its stores, and
sample its oracle.

The law itself — formulas, noise fields, keys — is documented in `hpcds.data.benchmark_law`.
Here:

    build_law(cfg)            grids from `cfg.grid`, ETOPO terrain, I and C → `BenchmarkLaw`
    generate_benchmark(cfg)   the LR store, the HR store (the truth: one draw of p(HR | LR)
                              per date, stream 0) and the forcings store (static orography
                              and land-sea on the HR grid), float32, with provenance
    oracle_sample(law, lr, …) exact draws of p(HR | LR) for any LR state (stream 1)

Generation is deterministic: the same seed (and config) gives identical stores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcds import __version__
from hpcds.config.schema import HpcdsConfig, StaticSource
from hpcds.data.benchmark_law import (
    STREAM_ORACLE,
    STREAM_TRUTH,
    UNITS,
    VARIABLES,
    BenchmarkLaw,
    FineScale,
    LargeScale,
    LawGeometry,
    NoiseSpace,
)
from hpcds.data.forcings import write_forcings_store
from hpcds.data.store import create_store
from hpcds.data.terrain import grid_spacing_deg, load_terrain, terrain_on_grid
from hpcds.errors import ConfigError, GridError, StoreError
from hpcds.grids import Grid, coarsening_matrix, interpolation_matrix, make_grid
from hpcds.grids.geometry import EARTH_RADIUS_M

LAW_SUMMARY = (
    "HR = I·x_LR + D(I·x_LR, z') + noise, z' = z_HR − I·C·z_HR; "
    "2t: −γz' + σ_T(z')·S_τ(g); 10u/10v: ×(1+α tanh(z'/h0)) + σ_w(|V|)·S_τ(g); "
    "msl: + σ_p·S_τ(g); tp: ×(1+μ tanh(z'/h0))·exp(s g − s²/2); g: unit Gaussian random "
    "Fourier fields with E(k) ∝ k^-β at wavelengths < 2 LR spacings; S_τ: normalised "
    "sinh-arcsinh; LR: analytic travelling waves (see hpcds.data.benchmark_law)"
)


def benchmark_dates(cfg: HpcdsConfig) -> np.ndarray:
    """(n_dates,) datetime64[s]: start_date + i·frequency_hours."""
    b = cfg.benchmark
    try:
        start = np.datetime64(b.start_date, "s")
    except ValueError:
        raise ConfigError(f"bad value {b.start_date!r} for benchmark.start_date: expected an "
                          "ISO date such as 2026-01-01T00:00") from None
    if b.n_dates < 1 or b.frequency_hours < 1:
        raise ConfigError(f"benchmark.n_dates ({b.n_dates}) and benchmark.frequency_hours "
                          f"({b.frequency_hours}) must be ≥ 1")
    return start + np.arange(b.n_dates) * np.timedelta64(int(b.frequency_hours) * 3600, "s")


def _lr_static(terrain, hr: Grid, lr: Grid, orog_hr: np.ndarray, land_hr: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """LR orography and land fraction: the coarse-grained HR fields on LR cells the HR grid
    covers, ETOPO at the LR spacing on the others (the LR margin)."""
    coarsen, covered = coarsening_matrix(hr, lr)
    orog_lr, land_lr = terrain_on_grid(terrain, lr, orography=True)
    covered = np.asarray(covered, dtype=bool)
    orog_lr[covered] = (coarsen @ orog_hr)[covered]
    land_lr[covered] = (coarsen @ land_hr)[covered]
    return orog_lr, land_lr


def build_law(cfg: HpcdsConfig) -> BenchmarkLaw:
    """The benchmark's law on `cfg.grid.hr` / `cfg.grid.lr` with `cfg.benchmark`'s settings.

    Raises UserError for a missing terrain file (before anything is written) and GridError
    when the HR grid is not finer than the LR grid.
    """
    b = cfg.benchmark
    terrain = load_terrain(b.terrain_file)
    hr, lr = make_grid(cfg.grid.hr), make_grid(cfg.grid.lr)
    hr_spacing = np.deg2rad(grid_spacing_deg(hr)) * EARTH_RADIUS_M
    lr_spacing = np.deg2rad(grid_spacing_deg(lr)) * EARTH_RADIUS_M
    if hr_spacing >= lr_spacing:
        raise GridError(f"grid.hr={hr.name} (spacing {hr_spacing / 1e3:.0f} km) is not finer "
                        f"than grid.lr={lr.name} ({lr_spacing / 1e3:.0f} km): swap them")
    if b.noise_modes < 1 or b.tail_strength < 0:
        raise ConfigError(f"benchmark.noise_modes ({b.noise_modes}) must be ≥ 1 and "
                          f"benchmark.tail_strength ({b.tail_strength}) ≥ 0")
    orog_hr, land_hr = terrain_on_grid(terrain, hr, orography=True)
    orog_lr, land_lr = _lr_static(terrain, hr, lr, orog_hr, land_hr)
    geometry = LawGeometry(hr, lr, interpolation_matrix(lr, hr).tocsr(), orog_hr, land_hr,
                           orog_lr, land_lr)
    return BenchmarkLaw(
        geometry=geometry, dates=benchmark_dates(cfg), step_hours=float(b.frequency_hours),
        seed=int(b.seed), tail_strength=float(b.tail_strength),
        noise=NoiseSpace.for_grid(hr, lr_spacing, hr_spacing, b.noise_slope, b.noise_modes),
        large_scale=LargeScale.draw(int(b.seed)), fine=FineScale())


def oracle_sample(law: BenchmarkLaw, lr: np.ndarray, date_index: int, n: int, seed: int = 0,
                  cells=None) -> np.ndarray:
    """(n, n_var, n_cells) float64: `n` exact, independent draws of p(HR | LR = `lr`).

    lr: (n_var, n_lr) LR state (e.g. read from the LR store); cells: None (all HR cells),
    (a, b) or an index array. Draws are keyed by (seed, date_index, member), independent of
    the truth (a different stream) and of each other.
    """
    return np.stack([law.sample(lr, date_index, member=m, stream=STREAM_ORACLE, sub_seed=seed,
                                cells=cells) for m in range(int(n))])


def _provenance(cfg: HpcdsConfig, law: BenchmarkLaw, role: str) -> dict:
    b = cfg.benchmark
    return {
        "generator": "hpcds.data.benchmark.generate_benchmark",
        "hpcds_version": __version__,
        "role": role,
        "law": LAW_SUMMARY,
        "seed": int(b.seed),
        "noise_slope": float(b.noise_slope),
        "noise_modes": int(b.noise_modes),
        "tail_strength": float(b.tail_strength),
        "terrain_source": f"ETOPO5 (NOAA NGDC) via Debian ferret-datasets: {b.terrain_file}",
        "hr_grid": law.geometry.hr.name,
        "lr_grid": law.geometry.lr.name,
    }


def _check_outputs(paths: dict[str, str], overwrite: bool) -> None:
    """Refuse up front, before any work, to replace stores without `overwrite`."""
    existing = [p for p in paths.values() if Path(p).exists()]
    if existing and not overwrite:
        raise StoreError(f"benchmark stores already exist: {', '.join(existing)}; pass "
                         "overwrite=True (`--overwrite`) to replace them")


def generate_benchmark(cfg: HpcdsConfig, overwrite: bool = False, progress: bool = True,
                       config_yaml: str | None = None) -> dict[str, str]:
    """Write the benchmark's LR, HR and forcings stores; returns {"lr", "hr", "forcings"}
    → path. Every store is published atomically; nothing is written if the law cannot be
    built (e.g. no terrain file). `config_yaml`, the resolved config, is saved in each store's
    ``hpcds_config`` attribute."""
    from tqdm.auto import tqdm

    unknown = [v for v in cfg.data.variables if v not in VARIABLES]
    if unknown:
        raise ConfigError(f"data.variables {unknown} are not produced by the benchmark; it "
                          f"produces {', '.join(VARIABLES)}")
    if cfg.data.static.source is not StaticSource.forcings_store:
        raise ConfigError("data.static.source: the benchmark writes its static fields to "
                          "data.forcings_store; set data.static.source=forcings_store")
    paths = {"lr": str(cfg.data.lr_store), "hr": str(cfg.data.hr_store),
             "forcings": str(cfg.data.forcings_store)}
    _check_outputs(paths, overwrite)
    law = build_law(cfg)
    g, b = law.geometry, cfg.benchmark
    common = dict(variables=list(VARIABLES), dates=law.dates, frequency=f"{b.frequency_hours}h",
                  units=dict(UNITS), chunk_cells=int(b.chunk_cells), overwrite=overwrite)
    extra = {"hpcds_config": config_yaml} if config_yaml is not None else {}
    with create_store(paths["lr"], grid=g.lr, attrs={"provenance": _provenance(cfg, law, "lr"),
                                                    **extra}, **common) as lr_writer, \
         create_store(paths["hr"], grid=g.hr, attrs={"provenance": _provenance(cfg, law, "hr"),
                                                    **extra}, **common) as hr_writer:
        for i in tqdm(range(len(law.dates)), desc="benchmark", unit="date",
                      disable=None if progress else True):  # a terminal's only
            lr_state = law.lr_state(i)
            lr_writer.write(i, lr_state[:, None, :].astype(np.float32))
            truth = law.sample(lr_state, i, member=0, stream=STREAM_TRUTH)
            hr_writer.write(i, truth[:, None, :].astype(np.float32))
    write_forcings_store(paths["forcings"], g.hr, {"orog": g.orog_hr, "lsm": g.land_hr},
                         law.dates[0], frequency=f"{b.frequency_hours}h",
                         chunk_cells=int(b.chunk_cells), config=cfg.data.static,
                         attrs={"provenance": _provenance(cfg, law, "forcings"), **extra},
                         overwrite=overwrite)
    return paths
