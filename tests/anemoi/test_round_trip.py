"""anemoi-datasets both ways, against the real package (.venv-anemoi, see conftest.py).

In: LR, HR and forcings datasets are built by `anemoi-datasets create` from netCDF files
written here (small analytic fields with CF units), then `hpcds data check`, `train` and
`sample` run on them. The LR file runs south to north (anemoi-datasets keeps that order), the
HR file north to south; the HR dataset carries the surface geopotential `z` and `lsm` as
constant fields, as ERA5-like datasets do, and the forcings dataset carries them alone.
Out: the ensemble store `hpcds sample` writes opens with `anemoi.datasets.open_dataset` and
with xarray, and both read the numbers hpcds wrote, with the HR dataset's units.

Grids: HR 0.5° on 48/6/44/14 (9 × 17 = 153 cells), LR 1° on 50/4/42/16 (9 × 13), 8 dates.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.cells import store_cells_for_grid
from hpcds.data.paired import PairedDataset
from hpcds.data.store import open_store
from hpcds.ensemble.output import EnsembleStore
from hpcds.grids import make_grid

G = 9.80665
DATES = np.arange("2026-01-01T00", "2026-01-03T00", 6, dtype="datetime64[h]").astype(
    "datetime64[s]")
HR_LAT, HR_LON = np.arange(48.0, 43.9, -0.5), np.arange(6.0, 14.1, 0.5)  # north → south
LR_LAT, LR_LON = np.arange(42.0, 50.1, 1.0), np.arange(4.0, 16.1, 1.0)  # south → north
CF = {"t2m": {"standard_name": "air_temperature", "units": "K",
              "long_name": "2 metre temperature"},
      "u10": {"standard_name": "eastward_wind", "units": "m s-1",
              "long_name": "10 metre U wind component"},
      "z": {"standard_name": "surface_geopotential", "units": "m**2 s**-2",
            "long_name": "Geopotential"},
      "lsm": {"units": "(0 - 1)", "long_name": "Land-sea mask"}}
GRIDS = ["grid.hr.name=0.5/0.5", "grid.hr.area=48/6/44/14", "grid.lr.name=1.0/1.0",
         "grid.lr.area=48/6/44/14", "grid.lr.margin_deg=2.0",
         "model.hidden_grid.name=1.0/1.0", "model.hidden_grid.area=48/6/44/14"]
MODEL = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
         "model.noise_embedding_dim=16", "model.window=8"]
RUN = ["data.variables=[t2m,u10]", "training.steps=3", "training.val_dates=1",
       "training.warmup_steps=1", "training.val_every=0", "training.checkpoint_every=0",
       "sampling.steps=2", "sampling.members=2", "sampling.members_per_batch=2"]
GEOPOTENTIAL = ["data.static.orography=z", "data.static.orography_quantity=geopotential"]


# ---------------------------------------------------------------- the fields, in closed form

def large_scale(lat, lon) -> dict[str, np.ndarray]:
    """(time, *lat.shape) float64: travelling waves, cold over the (smooth, resolved)
    mountain: what the LR dataset holds."""
    phase = 0.7 * np.arange(len(DATES)).reshape(-1, *([1] * np.ndim(lat)))
    wave = np.sin(np.deg2rad(40.0 * (lon - 4.0)) + phase) * np.cos(np.deg2rad(30 * (lat - 46)))
    t2m = 275.0 + 0.5 * (48.0 - lat) + 6.0 * wave - 0.0065 * height(lat, lon)
    u10 = 4.0 * np.cos(np.deg2rad(30.0 * (lat - 42.0)) - phase) + 0.3 * (lon - 10.0)
    return {"t2m": t2m, "u10": u10}


def height(lat, lon) -> np.ndarray:
    """Orography (m): one 2500 m mountain."""
    return 2500.0 * np.exp(-((lat - 46.0) ** 2 / 2.0 + (lon - 10.0) ** 2 / 8.0))


def land(lat, lon) -> np.ndarray:
    """Land fraction: sea in the south-east corner, a half-land coast around it."""
    coast = np.where((lat < 45.7) & (lon > 12.3), 0.5, 1.0)
    return np.where((lat < 45.2) & (lon > 12.8), 0.0, coast)


def hr_fields(lat, lon) -> dict[str, np.ndarray]:
    """(time, *lat.shape): the large scale plus detail only the HR grid resolves (a
    checkerboard at its 0.5° spacing) and a little noise."""
    rng = np.random.default_rng(0)
    detail = np.cos(2 * np.pi * lat) * np.cos(2 * np.pi * lon)
    out = large_scale(lat, lon)
    out["t2m"] = out["t2m"] + 1.5 * detail
    out["u10"] = out["u10"] + 1.0 * detail
    return {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in out.items()}


def netcdf(path, lat, lon, fields: dict, dates=DATES):
    """fields {name: (time, lat, lon)} with CF attributes → a netCDF file (xarray)."""
    coords = {"time": dates.astype("datetime64[ns]"),
              "latitude": ("latitude", lat, {"standard_name": "latitude",
                                             "units": "degrees_north"}),
              "longitude": ("longitude", lon, {"standard_name": "longitude",
                                               "units": "degrees_east"})}
    ds = xr.Dataset({k: (("time", "latitude", "longitude"), np.asarray(v, np.float32), CF[k])
                     for k, v in fields.items()}, coords=coords)
    ds.to_netcdf(path)
    return path


def recipe(path, dates=DATES) -> dict:
    return {"dates": {"start": str(dates[0]), "end": str(dates[-1]), "frequency": "6h"},
            "input": {"netcdf": {"path": str(path)}}}


@pytest.fixture(scope="session")
def world(anemoi, tmp_path_factory):
    """The three anemoi datasets and the config overrides that point hpcds at them."""
    out = tmp_path_factory.mktemp("anemoi")
    hla, hlo = np.meshgrid(HR_LAT, HR_LON, indexing="ij")
    lla, llo = np.meshgrid(LR_LAT, LR_LON, indexing="ij")
    static = {"z": G * height(hla, hlo), "lsm": land(hla, hlo)}
    steady = {k: np.broadcast_to(v, (len(DATES), *v.shape)) for k, v in static.items()}
    hr = netcdf(out / "hr.nc", HR_LAT, HR_LON, {**hr_fields(hla, hlo), **steady})
    lr = netcdf(out / "lr.nc", LR_LAT, LR_LON, large_scale(lla, llo))
    forc = netcdf(out / "forcings.nc", HR_LAT, HR_LON, {k: v[None] for k, v in static.items()},
                  dates=DATES[:1])
    stores = {"hr": anemoi.create(recipe(hr), out / "hr.zarr"),
              "lr": anemoi.create(recipe(lr), out / "lr.zarr"),
              "forcings": anemoi.create(recipe(forc, DATES[:1]), out / "forcings.zarr")}
    overrides = ["tiny", f"run.out_dir={out / 'run'}", *GRIDS, *MODEL, *RUN,
                 *(f"data.{k}_store={v}" for k, v in stores.items())]
    return {"dir": out, "stores": stores, "overrides": overrides}


# ------------------------------------------------------------------------------------ in

def test_anemoi_stores_read_in_hpcds(world, anemoi, tmp_path):
    hr, lr = open_store(world["stores"]["hr"]), open_store(world["stores"]["lr"])
    # hpcds reads what anemoi-datasets reads, number for number
    data, meta = anemoi.read(world["stores"]["hr"], tmp_path)
    np.testing.assert_array_equal(hr.read(slice(None)), data["data"])
    np.testing.assert_array_equal(hr.latitudes, data["latitudes"])
    assert meta["constant_fields"] == ["lsm", "z"]
    # anemoi-datasets sorts the variables and lists the time-constant ones
    assert hr.variables == ["lsm", "t2m", "u10", "z"] and hr.constant_fields == ["lsm", "z"]
    assert hr.units == {"lsm": "(0 - 1)", "t2m": "K", "u10": "m s-1", "z": "m**2 s**-2"}
    assert hr.cell_order == lr.cell_order == "native"
    np.testing.assert_array_equal(hr.dates, DATES)
    cfg = load_config("tiny", GRIDS)
    for store, grid_cfg in ((hr, cfg.grid.hr), (lr, cfg.grid.lr)):
        grid = make_grid(grid_cfg)
        index = store_cells_for_grid(store, grid, "store", "")  # LR: matched by coordinates
        values = store.read(slice(None), ["u10"], cells=index)[:, 0, 0]  # (time, cell) SFC
        expected = large_scale(grid.latitudes, grid.longitudes)["u10"]
        # the LR store holds the large scale exactly (float32); the HR one adds ≤ 1 + noise
        tol = 1e-5 if store is lr else 2.5
        np.testing.assert_allclose(values, expected, rtol=tol if store is lr else 0, atol=tol)


@pytest.mark.parametrize("source", ["forcings_store", "hr_store"])
def test_data_check_passes_and_static_fields_are_converted(world, source, capsys):
    argv = [*world["overrides"], *GEOPOTENTIAL, f"data.static.source={source}", "--quiet"]
    assert main(["data", "check", *argv]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    where = world["stores"]["forcings" if source == "forcings_store" else "hr"]
    low = height(48.0, 6.0)  # the corners: 2500 m · e⁻⁴ = 46 m
    assert (f"static     ok: orography z / g ({low:.0f} … 2500 m), land fraction lsm, from "
            f"{where}") in out
    assert "data check passed" in out
    ds = PairedDataset.from_config(load_config(argv[0], argv[1:-1]))
    grid = ds.hr_grid
    np.testing.assert_allclose(ds.static_fields["orog"], height(grid.latitudes, grid.longitudes),
                               rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(ds.static_fields["lsm"], land(grid.latitudes, grid.longitudes))


def test_z_read_as_a_height_is_refused(world, capsys):
    argv = [*world["overrides"], "data.static.orography=z", "--quiet"]
    assert main(["data", "check", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hpcds: error: data.static.orography_quantity: 'z' in "
                   f"{world['stores']['forcings']} has units 'm**2 s**-2', a geopotential; "
                   "set data.static.orography_quantity=geopotential")


# ----------------------------------------------------------------------------------- out

def test_train_sample_and_read_back_with_anemoi_and_xarray(world, anemoi, tmp_path, capsys):
    argv = [*world["overrides"], *GEOPOTENTIAL, "--quiet"]
    assert main(["train", *argv]) == 0, capsys.readouterr().err
    assert main(["sample", *argv]) == 0, capsys.readouterr().err
    path = world["dir"] / "run" / "ensemble.zarr"
    ours = EnsembleStore.open(path)
    values = ours.read()  # (time, variable, member, cell) float32, SFC order
    assert values.shape == (len(DATES), 2, 2, 153) and np.isfinite(values).all()
    lat, lon = ours.latitudes, ours.longitudes

    data, meta = anemoi.read(path, tmp_path)
    assert meta["variables"] == ["t2m", "u10"] and meta["shape"] == [8, 2, 2, 153]
    np.testing.assert_array_equal(data["data"], values)
    np.testing.assert_array_equal(data["dates"].astype("datetime64[s]"), DATES)
    np.testing.assert_array_equal(data["latitudes"], lat)
    np.testing.assert_array_equal(data["longitudes"], lon)
    # the HR dataset's units, carried through (they came out "" before); anemoi-datasets
    # keeps no long_name from the netCDF file, and hpcds's CF table knows "2t", not "t2m"
    assert meta["variables_metadata"] == {"t2m": {"units": "K"}, "u10": {"units": "m s-1"}}

    ds = xr.open_zarr(path)
    np.testing.assert_array_equal(ds["data"].values, values)
    np.testing.assert_array_equal(ds["latitudes"].values, lat)
    np.testing.assert_array_equal(ds["longitudes"].values, lon)
    np.testing.assert_array_equal(ds["dates"].values.astype("datetime64[s]"), DATES)
    assert ds.attrs["units"] == {"t2m": "K", "u10": "m s-1"}
