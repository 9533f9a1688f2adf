"""Forcing channels against closed forms; shards get slices; the forcings store round-trips."""

import numpy as np
import pytest

from hpcds.config.schema import OrographyQuantity, StaticConfig, StaticSource
from hpcds.data.forcings import (
    FORCING_NAMES,
    GRAVITY,
    forcing_fields,
    static_forcings_from_store,
    units_quantity,
    write_forcings_store,
)
from hpcds.data.store import create_store, open_store
from hpcds.errors import DataCheckError
from hpcds.grids.geometry import Grid


def points_grid(lat, lon) -> Grid:
    lat, lon = np.asarray(lat, float), np.asarray(lon, float) % 360.0
    n = lat.size
    return Grid("points", lat, lon, np.full(n, 1.0 / n), np.arange(n)[::-1].copy(), (n,), False)


def test_local_solar_time_noon_and_midnight():
    grid = points_grid([10.0, 10.0, -40.0, 0.0], [90.0, 0.0, -90.0, 180.0])
    static = {"orog": np.zeros(4), "lsm": np.zeros(4)}
    names, values = forcing_fields(grid, static, np.datetime64("2026-03-01T06:00"))
    sin_t, cos_t = values[names.index("sin_local_time")], values[names.index("cos_local_time")]
    # 06 UTC: 90°E is at noon (angle π), 0° at 06 local (π/2), 90°W at midnight (0),
    # 180° at 18 local (3π/2)
    np.testing.assert_allclose(sin_t, [0.0, 1.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(cos_t, [-1.0, 0.0, 1.0, 0.0], atol=1e-6)


def test_day_of_year_and_coordinates_closed_forms():
    lat, lon = np.array([-60.0, 0.0, 45.0]), np.array([350.0, 10.0, 200.0])
    grid = points_grid(lat, lon)
    orog, lsm = np.array([0.0, 250.0, 4810.0]), np.array([0.0, 0.5, 1.0])
    date = np.datetime64("2026-07-02T12:00")  # 182.5 days after 1 January 00 UTC
    names, values = forcing_fields(grid, {"orog": orog, "lsm": lsm}, date)
    assert names == list(FORCING_NAMES) and values.dtype == np.float32
    assert values.shape == (len(FORCING_NAMES), 3)
    f = dict(zip(names, values))
    np.testing.assert_allclose(f["orog"], [0.0, 0.25, 4.81], rtol=1e-6)
    np.testing.assert_allclose(f["lsm"], lsm)
    np.testing.assert_allclose(f["sin_lat"], [-np.sqrt(3) / 2, 0.0, np.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(f["cos_lat"], [0.5, 1.0, np.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(f["sin_lon"], np.sin(np.radians([-10.0, 10.0, -160.0])),
                               atol=1e-6)
    np.testing.assert_allclose(f["cos_lon"], np.cos(np.radians([-10.0, 10.0, -160.0])),
                               atol=1e-6)
    angle = 2 * np.pi * 182.5 / 365.25
    np.testing.assert_allclose(f["sin_day_of_year"], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(f["cos_day_of_year"], np.cos(angle), atol=1e-6)
    _, new_year = forcing_fields(grid, {"orog": orog, "lsm": lsm},
                                 np.datetime64("2027-01-01T00:00"))
    np.testing.assert_allclose(new_year[-2:], [[0, 0, 0], [1, 1, 1]], atol=1e-7)


def test_a_shard_gets_the_slice_of_the_full_grid():
    rng = np.random.default_rng(0)
    grid = points_grid(rng.uniform(-80, 80, 50), rng.uniform(0, 360, 50))
    static = {"orog": rng.uniform(0, 3000, 50), "lsm": rng.uniform(0, 1, 50)}
    date = np.datetime64("2026-01-05T18:00")
    _, full = forcing_fields(grid, static, date)
    _, shard = forcing_fields(grid, {k: v[20:35] for k, v in static.items()}, date,
                              cells=(20, 35))
    np.testing.assert_array_equal(shard, full[:, 20:35])
    with pytest.raises(ValueError, match="static field 'orog' has shape"):
        forcing_fields(grid, static, date, cells=(20, 35))


def test_forcings_store_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    grid = points_grid(rng.uniform(40, 50, 30), rng.uniform(0, 20, 30))
    static = {"orog": rng.uniform(0, 4000, 30), "lsm": rng.uniform(0, 1, 30)}
    path = tmp_path / "forcings.zarr"
    write_forcings_store(path, grid, static, np.datetime64("2026-01-01T00:00"), frequency="6h",
                         chunk_cells=8, attrs={"provenance": {"test": True}})
    store = open_store(path)
    assert store.units == {"orog": "m", "lsm": "1"}
    read = static_forcings_from_store(store, grid, cells=(5, 25))
    for name in ("orog", "lsm"):
        np.testing.assert_allclose(read[name], static[name][5:25].astype(np.float32))
    other = points_grid(grid.latitudes + 1.0, grid.longitudes)
    with pytest.raises(DataCheckError, match="another grid"):
        static_forcings_from_store(store, other, cells=(0, 30))


# ------------------------------------------------------------- data.static: names, units

GEOPOTENTIAL = StaticConfig(orography="z", land_sea_mask="LSM",
                            orography_quantity=OrographyQuantity.geopotential)


def static_store(path, grid, fields: dict, units: dict, n_dates=1, attrs=None):
    """A store holding `fields` {name: (n,)} constant over `n_dates` six-hourly dates."""
    names = list(fields)
    dates = np.datetime64("2026-01-01T00", "s") + np.arange(n_dates) * np.timedelta64(6, "h")
    with create_store(path, grid=grid, variables=names, dates=dates, frequency="6h",
                      units=units, chunk_cells=8, attrs=attrs) as writer:
        for t in range(n_dates):
            writer.write(t, np.stack([fields[n] for n in names])[:, None, :])
    return open_store(path)


@pytest.fixture
def grid():
    rng = np.random.default_rng(2)
    return points_grid(rng.uniform(40, 50, 20), rng.uniform(0, 20, 20))


def test_geopotential_is_divided_by_standard_gravity(tmp_path, grid):
    height = np.linspace(0.0, 4000.0, 20)
    lsm = np.linspace(0.0, 1.0, 20)
    store = static_store(tmp_path / "s.zarr", grid, {"LSM": lsm, "z": height * 9.80665},
                         {"z": "m**2 s**-2", "LSM": "(0 - 1)"})
    read = static_forcings_from_store(store, grid, GEOPOTENTIAL)
    # float32 storage: ~1e-7 relative
    np.testing.assert_allclose(read["orog"], height, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(read["lsm"], lsm, rtol=1e-6)
    assert GRAVITY == 9.80665
    # hpcds's own writer stores geopotential when data.static asks for it, and reads it back
    write_forcings_store(tmp_path / "f.zarr", grid, {"orog": height, "lsm": lsm},
                         np.datetime64("2026-01-01"), frequency="6h", chunk_cells=8,
                         config=GEOPOTENTIAL)
    written = open_store(tmp_path / "f.zarr")
    assert written.variables == ["z", "LSM"] and written.units["z"] == "m**2 s**-2"
    np.testing.assert_allclose(written.read(0, ["z"])[0, 0, 0], height * 9.80665, rtol=1e-6)
    np.testing.assert_allclose(static_forcings_from_store(written, grid, GEOPOTENTIAL)["orog"],
                               height, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize(("units", "quantity"), [
    ("m", "height"), ("metres", "height"), ("m**2 s**-2", "geopotential"),
    ("m2 s-2", "geopotential"), ("m^2/s^2", "geopotential"), ("", None), ("ft", None)])
def test_units_name_the_quantity(units, quantity):
    found = units_quantity(units)
    assert (found.value if found else None) == quantity


@pytest.mark.parametrize(("case", "message"), [
    ("missing", r"^data.static.orography: the forcings store .* has no variable 'z' \(it has "
                r"orog, lsm\)$"),
    ("units", r"^data.static.orography_quantity: 'z' in .* has units 'm', a height; set "
              r"data.static.orography_quantity=height$"),
    ("mask", r"^data.static.land_sea_mask: 'LSM' in .* spans \[0, 100\], not a land fraction "
             r"in \[0, 1\]$"),
    ("nan", r"^data.static.land_sea_mask: 'LSM' in .* has NaNs on 1 cells"),
    ("too-high", r"^data.static.orography_quantity: 'orog' in .* reaches 29420 m as a height, "
                 r"above any mountain; a surface geopotential"),
    ("varies", r"^data.static.orography: 'z' varies in time in the HR store .* \(its constant "
               r"fields: LSM\); name a static field$"),
])
def test_bad_static_fields_name_the_key(tmp_path, grid, case, message):
    height, lsm = np.linspace(0, 3000, 20), np.full(20, 0.5)
    cfg, fields, units, kw = GEOPOTENTIAL, {"z": height * GRAVITY, "LSM": lsm}, {}, {}
    if case == "missing":
        fields = {"orog": height, "lsm": lsm}
    elif case == "units":
        fields, units = {"z": height, "LSM": lsm}, {"z": "m"}
    elif case == "mask":
        fields["LSM"] = np.linspace(0, 100, 20)  # a percentage
    elif case == "nan":
        fields["LSM"] = np.where(np.arange(20) == 3, np.nan, lsm)
    elif case == "too-high":  # a geopotential without units, read as a height
        cfg = StaticConfig()
        fields = {"orog": np.linspace(0, 3000 * GRAVITY, 20), "lsm": lsm}
    elif case == "varies":  # an anemoi-datasets HR store lists its constant fields
        cfg = StaticConfig(source=StaticSource.hr_store, orography="z", land_sea_mask="LSM",
                           orography_quantity=OrographyQuantity.geopotential)
        kw = {"n_dates": 2, "attrs": {"constant_fields": ["LSM"]}}
    store = static_store(tmp_path / "s.zarr", grid, fields, units, **kw)
    with pytest.raises(DataCheckError, match=message):
        static_forcings_from_store(store, grid, cfg)
