"""HR forcings: static fields (orography, land-sea mask) and the per-date input features.

The static fields on the HR grid, as hpcds works with them ({"orog", "lsm"}, (n,) float64):

    orog  surface height above sea level, m (ETOPO relief with the ocean at 0 m)
    lsm   land fraction in [0, 1]

They are read (`static_forcings_from_store`) from the store data.static.source names: the
forcings store (data.forcings_store, one date: `hpcds data forcings` builds it from ETOPO5 for
any HR grid, the benchmark writes one too) or the time-constant fields of the HR store (an
anemoi-datasets HR dataset often carries `z` and `lsm`). data.static.orography and
data.static.land_sea_mask name the variables there; data.static.orography_quantity says
whether the orography is a height (m) or a surface geopotential (m² s⁻², divided by
g = 9.80665).

`forcing_fields` turns them, with the cells' coordinates and the date, into the network's
forcing channels (n_forcings, n) float32, each O(1) and computed pointwise so that any shard
[a, b) gets exactly the slice of the full-grid features:

    orog                 orography / 1000 m (km: 0 at sea, ~1–5 over mountains). A fixed
                         physical scale, not a data statistic, so no global reduction is needed
                         and every dataset is scaled alike.
    lsm                  land fraction
    sin_lat, cos_lat     of the latitude
    sin_lon, cos_lon     of the longitude
    sin/cos_local_time   of 2π·(UTC hour + lon/15)/24: local *mean* solar time (no equation of
                         time), so at 90°E and 06 UTC it is noon (angle π)
    sin/cos_day_of_year  of 2π·doy/365.25, doy = days (fractional, 0-based) since 1 Jan 00 UTC
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from hpcds.config.schema import (DataConfig, HpcdsConfig, OrographyQuantity, StaticConfig,
                                 StaticSource)
from hpcds.data.cells import store_cells_for_grid
from hpcds.errors import ConfigError, DataCheckError
from hpcds.grids.geometry import Grid

STATIC_VARIABLES = ("orog", "lsm")  # the keys of the static fields hpcds works with
GRAVITY = 9.80665  # m s⁻², standard gravity: orography = surface geopotential / g
MAX_OROGRAPHY_M = 9000.0  # above Everest (8849 m): no orography in metres gets there
MASK_SLACK = 1e-3  # a land fraction this far outside [0, 1] is rounding (then clipped)
# `hpcds data forcings`: the one date of its store (static fields hold for every date), and
# chunks larger than the benchmark's (each run reads the static fields once)
STATIC_DATE = np.datetime64("2000-01-01T00:00", "s")
FORCINGS_CHUNK_CELLS = 65536
FORCING_NAMES = ("orog", "lsm", "sin_lat", "cos_lat", "sin_lon", "cos_lon",
                 "sin_local_time", "cos_local_time", "sin_day_of_year", "cos_day_of_year")
OROGRAPHY_SCALE_M = 1000.0
DAYS_PER_YEAR = 365.25


def _cell_range(grid: Grid, cells: tuple[int, int] | None) -> tuple[int, int]:
    return (0, grid.size) if cells is None else (int(cells[0]), int(cells[1]))


def utc_hours(date: np.datetime64) -> float:
    """Hours since 00 UTC of the date's day (fractional)."""
    seconds = np.datetime64(date, "s")
    return float((seconds - seconds.astype("datetime64[D]")) / np.timedelta64(1, "h"))


def day_of_year(date: np.datetime64) -> float:
    """Days since 1 January 00 UTC of the date's year (fractional, 0-based)."""
    seconds = np.datetime64(date, "s")
    return float((seconds - seconds.astype("datetime64[Y]")) / np.timedelta64(1, "D"))


def local_solar_time_angle(longitudes: np.ndarray, date: np.datetime64) -> np.ndarray:
    """(n,) radians: 2π·(UTC hour + lon/15)/24 (local mean solar time, noon = π)."""
    return 2.0 * np.pi * (utc_hours(date) + np.asarray(longitudes, np.float64) / 15.0) / 24.0


def forcing_fields(grid: Grid, static: Mapping[str, np.ndarray], date: np.datetime64,
                   cells: tuple[int, int] | None = None) -> tuple[list[str], np.ndarray]:
    """The forcing channels for the cells [a, b) of `grid` (all cells when `cells` is None).

    static: {"orog": (b-a,) m, "lsm": (b-a,) fraction} for those cells
            (see `static_forcings_from_store`).
    Returns (names, values (n_forcings, b-a) float32), names = `FORCING_NAMES`.
    """
    start, stop = _cell_range(grid, cells)
    lat = np.deg2rad(grid.latitudes[start:stop])
    lon = np.deg2rad(grid.longitudes[start:stop])
    for name in STATIC_VARIABLES:
        if np.shape(static[name]) != (stop - start,):
            raise ValueError(f"static field {name!r} has shape {np.shape(static[name])}, "
                             f"expected ({stop - start},) for cells [{start}, {stop})")
    solar = local_solar_time_angle(grid.longitudes[start:stop], date)
    season = 2.0 * np.pi * day_of_year(date) / DAYS_PER_YEAR
    ones = np.ones_like(lat)
    values = np.stack([
        np.asarray(static["orog"], np.float64) / OROGRAPHY_SCALE_M,
        np.asarray(static["lsm"], np.float64),
        np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon),
        np.sin(solar), np.cos(solar),
        np.sin(season) * ones, np.cos(season) * ones,
    ])
    return list(FORCING_NAMES), values.astype(np.float32)


def orography_factor(quantity: OrographyQuantity) -> float:
    """What a stored orography is multiplied by to give metres (1, or 1/g for geopotential)."""
    return 1.0 / GRAVITY if quantity is OrographyQuantity.geopotential else 1.0


def units_quantity(units: str) -> OrographyQuantity | None:
    """The quantity a units string denotes ("m", "metres" → height; "m**2 s**-2", "m2 s-2",
    "m^2/s^2" → geopotential), None when it is empty or neither."""
    u = re.sub(r"[\s*^.·]", "", str(units).lower())
    if u in ("m", "metre", "metres", "meter", "meters"):
        return OrographyQuantity.height
    if u in ("m2s-2", "m2/s2", "m+2s-2"):
        return OrographyQuantity.geopotential
    return None


def static_store(data: DataConfig, hr):
    """The store the static fields come from (data.static.source): the HR store `hr` itself,
    or the one at data.forcings_store."""
    if data.static.source is StaticSource.hr_store:
        return hr
    from hpcds.data.store import open_store

    return open_store(data.forcings_store, "data.forcings_store")


def _check_static_variables(store, static: StaticConfig, what: str) -> None:
    """The configured names exist in `store`, are constant in time where it says which are,
    and the orography's units (where given) fit data.static.orography_quantity."""
    for key in ("orography", "land_sea_mask"):
        name = getattr(static, key)
        if name not in store.variables:
            raise DataCheckError(f"data.static.{key}: {what} {store.path} has no variable "
                                 f"{name!r} (it has {', '.join(store.variables)})")
        constant = store.constant_fields  # None: the store does not say (hpcds stores)
        if constant is not None and len(store.dates) > 1 and name not in constant:
            raise DataCheckError(
                f"data.static.{key}: {name!r} varies in time in {what} {store.path} (its "
                f"constant fields: {', '.join(constant) or 'none'}); name a static field")
    units = store.units.get(static.orography, "")
    declared = units_quantity(units)
    if declared is not None and declared is not static.orography_quantity:
        raise DataCheckError(
            f"data.static.orography_quantity: {static.orography!r} in {store.path} has units "
            f"{units!r}, a {declared.value}; set data.static.orography_quantity="
            f"{declared.value}")


def static_forcings_from_store(store, grid: Grid, static: StaticConfig | None = None,
                               cells: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """{"orog": m, "lsm": land fraction}: (b-a,) float64 for the grid's SFC cells [a, b),
    read from `store` (see `static_store`) at its first date (static fields do not change):
    the variables data.static names, the orography converted to metres.

    Every check names the key to fix: a missing or time-varying variable, units that
    contradict data.static.orography_quantity, NaNs, a mask outside [0, 1], and an orography
    above any mountain in metres (a geopotential read as a height)."""
    static = static or StaticConfig()
    start, stop = _cell_range(grid, cells)
    hr = static.source is StaticSource.hr_store
    what = "the HR store" if hr else "the forcings store"
    _check_static_variables(store, static, what)
    fix = ("set grid.hr to the store's grid" if hr else
           "build the forcings for grid.hr: `hpcds data forcings --overwrite`")
    index = store_cells_for_grid(store, grid, what, fix, cells=(start, stop))
    names = [static.orography, static.land_sea_mask]
    at = slice(start, stop) if store.cell_order == "sfc" else index
    values = np.asarray(store.read(0, names, cells=at), np.float64)[0, :, 0]  # (2, b-a)
    orog = values[0] * orography_factor(static.orography_quantity)
    lsm = values[1]
    for key, name, field in (("orography", static.orography, orog),
                             ("land_sea_mask", static.land_sea_mask, lsm)):
        if np.isnan(field).any():
            raise DataCheckError(f"data.static.{key}: {name!r} in {store.path} has NaNs on "
                                 f"{int(np.isnan(field).sum())} cells at its first date; "
                                 "static fields must cover the whole HR grid")
    if lsm.min() < -MASK_SLACK or lsm.max() > 1.0 + MASK_SLACK:
        raise DataCheckError(f"data.static.land_sea_mask: {static.land_sea_mask!r} in "
                             f"{store.path} spans [{lsm.min():.4g}, {lsm.max():.4g}], not a "
                             "land fraction in [0, 1]")
    if orog.max() > MAX_OROGRAPHY_M:
        raise DataCheckError(
            f"data.static.orography_quantity: {static.orography!r} in {store.path} reaches "
            f"{orog.max():.0f} m as a {static.orography_quantity.value}, above any mountain; "
            "a surface geopotential (m² s⁻²) needs data.static.orography_quantity=geopotential")
    return {"orog": orog, "lsm": np.clip(lsm, 0.0, 1.0)}


def static_fields(terrain, grid: Grid) -> dict[str, np.ndarray]:
    """Static HR fields from real terrain: {"orog": (n,) m ≥ 0, "lsm": (n,) in [0, 1]}."""
    from hpcds.data.terrain import terrain_on_grid

    orography, land = terrain_on_grid(terrain, grid, orography=True)
    return {"orog": orography, "lsm": land}


def write_forcings_store(path, grid: Grid, static: Mapping[str, np.ndarray],
                         date: np.datetime64, *, frequency: str, chunk_cells: int,
                         config: StaticConfig | None = None, attrs: dict | None = None,
                         overwrite: bool = False):
    """Write the static fields {"orog": (n,) m, "lsm": (n,)} (float32) as a one-date store at
    `path` in the form `config` (data.static) reads them: its variable names, the orography
    as a geopotential if it says so. Returns the path."""
    from hpcds.data.store import create_store

    config = config or StaticConfig()
    geopotential = config.orography_quantity is OrographyQuantity.geopotential
    names = [config.orography, config.land_sea_mask]
    values = np.stack([np.asarray(static["orog"], np.float64)
                       / orography_factor(config.orography_quantity),
                       np.asarray(static["lsm"], np.float64)])
    units = {names[0]: "m**2 s**-2" if geopotential else "m", names[1]: "1"}
    with create_store(path, grid=grid, variables=names,
                      dates=np.array([np.datetime64(date, "s")]), frequency=frequency,
                      units=units, chunk_cells=chunk_cells, attrs=attrs,
                      overwrite=overwrite) as writer:
        writer.write(0, values[:, None, :].astype(np.float32))
    return path


def build_forcings_store(cfg: HpcdsConfig, *, overwrite: bool = False,
                         config_yaml: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """`hpcds data forcings`: the static fields of grid.hr from ETOPO5 (benchmark.terrain_file,
    see `static_fields`), written to data.forcings_store as data.static reads them.

    An existing store is refused before any work unless `overwrite`, and replaced only once
    the new one is complete (`create_store`). Returns (path, {"orog", "lsm"} (n,) float64)."""
    from hpcds import __version__
    from hpcds.atomic import exists_error
    from hpcds.data.terrain import load_terrain
    from hpcds.grids.grid_cache import cached_grid

    d = cfg.data
    if d.static.source is not StaticSource.forcings_store:
        raise ConfigError("data.static.source: `hpcds data forcings` writes data.forcings_store, "
                          "but data.static.source=hr_store reads the HR store; set "
                          "data.static.source=forcings_store to use it")
    path = Path(d.forcings_store)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise exists_error(path)
    terrain = load_terrain(cfg.benchmark.terrain_file)
    grid = cached_grid(cfg.grid.hr, cfg.grid.cache_dir)
    static = static_fields(terrain, grid)
    provenance = {"tool": "hpcds data forcings", "hpcds_version": __version__,
                  "terrain_source": f"ETOPO5 (NOAA NGDC) via Debian ferret-datasets: "
                                    f"{cfg.benchmark.terrain_file}",
                  "grid": grid.name}
    attrs = {"provenance": provenance,
             **({"hpcds_config": config_yaml} if config_yaml is not None else {})}
    write_forcings_store(path, grid, static, STATIC_DATE, frequency="6h",
                         chunk_cells=FORCINGS_CHUNK_CELLS, config=d.static, attrs=attrs,
                         overwrite=overwrite)
    return str(path), static
