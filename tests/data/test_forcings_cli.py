"""`hpcds data forcings`: ETOPO5 static fields for the configured HR grid, checked against the
terrain file read directly; atomic, refuses to overwrite, and writes what data.static reads."""

import hashlib
from pathlib import Path

import netCDF4
import numpy as np

from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.store import open_store
from hpcds.grids import make_grid

ETOPO5 = "/usr/share/ferret-vis/data/etopo5.cdf"
# 0.25° is a multiple of ETOPO5's 5' spacing, and the finest level not finer than 0.25° is
# ETOPO5 itself: every HR cell sits on a node of the file, where bilinear interpolation
# returns the node's value. Nearly: the file's longitudes drift by up to 1.2e-4° (0.15% of a
# spacing) at 11°E, which moves the result by that fraction of a neighbour's difference
# (≲ 1000 m in the Alps → ≲ 1.5 m)
NODE_DRIFT_DEG, NODE_DRIFT_M = 2e-4, 3.0
GRID = ["grid.hr.name=0.25/0.25", "grid.hr.area=47/7/45/11"]  # 9 × 17 cells


def args(tmp_path, *extra):
    return ["tiny", f"run.out_dir={tmp_path}", *GRID, *extra, "--quiet"]


def etopo_at(lat, lon) -> np.ndarray:
    """ETOPO5 relief (m) at the nodes nearest to (lat, lon), read with netCDF4."""
    with netCDF4.Dataset(ETOPO5) as ds:
        y, x = ds.variables["ROSE"].dimensions
        lats, lons = ds.variables[y][:], ds.variables[x][:] % 360.0
        rows = np.abs(lats[None, :] - lat[:, None]).argmin(axis=1)
        cols = np.abs(lons[None, :] - lon[:, None] % 360.0).argmin(axis=1)
        assert np.abs(lats[rows] - lat).max() < NODE_DRIFT_DEG
        assert np.abs(lons[cols] - lon % 360.0).max() < NODE_DRIFT_DEG
        relief = ds.variables["ROSE"][:]
    return np.asarray(relief[rows, cols], dtype=np.float64)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_forcings_from_etopo5_on_the_configured_grid(tmp_path, capsys):
    assert main(["data", "forcings", *args(tmp_path)]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "data" / "forcings.zarr"
    assert f"forcings: {path} (grid.hr 0.25/0.25, 153 cells)" in out
    store = open_store(path)
    grid = make_grid(load_config("tiny", GRID).grid.hr)
    assert store.variables == ["orog", "lsm"] and store.units == {"orog": "m", "lsm": "1"}
    assert store.n_cells == grid.size == 153
    relief = etopo_at(store.latitudes, store.longitudes)
    orog, lsm = store.read(0)[0, :, 0]
    # surface height: the relief with the sea at 0 m; land: relief > 0 (the Alps and the Po
    # valley, no sea in this box)
    np.testing.assert_allclose(orog, np.maximum(relief, 0.0), atol=NODE_DRIFT_M)
    np.testing.assert_allclose(lsm, (relief > 0).astype(float), atol=2e-3)
    assert orog.max() > 2500.0 and lsm.min() > 0.99

    # kept without --overwrite (one line, nothing changed), replaced with it
    before = digest(path)
    assert main(["data", "forcings", *args(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hpcds: error: {path} exists; pass --overwrite (or overwrite=True) to replace it"
    assert digest(path) == before
    assert main(["data", "forcings", *args(tmp_path), "--overwrite"]) == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["forcings.zarr"]  # no temporaries


def test_written_as_data_static_reads_it(tmp_path, capsys):
    """A config that reads a geopotential `z` and a mask `LSM` gets exactly those."""
    static = ["data.static.orography=z", "data.static.land_sea_mask=LSM",
              "data.static.orography_quantity=geopotential"]
    assert main(["data", "forcings", *args(tmp_path, *static)]) == 0
    store = open_store(tmp_path / "data" / "forcings.zarr")
    assert store.variables == ["z", "LSM"] and store.units["z"] == "m**2 s**-2"
    z = store.read(0, ["z"])[0, 0, 0]
    relief = etopo_at(store.latitudes, store.longitudes)
    np.testing.assert_allclose(z / 9.80665, np.maximum(relief, 0.0), atol=NODE_DRIFT_M)


def test_refused_when_static_fields_come_from_the_hr_store(tmp_path, capsys):
    assert main(["data", "forcings", *args(tmp_path, "data.static.source=hr_store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpcds: error: data.static.source: `hpcds data forcings` writes "
                          "data.forcings_store") and "\n" not in err
    assert not (tmp_path / "data").exists()


def test_missing_terrain_writes_nothing(tmp_path, capsys):
    assert main(["data", "forcings", *args(tmp_path, f"benchmark.terrain_file={tmp_path}/x.cdf")]
                ) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hpcds: error: ETOPO5 terrain not found at {tmp_path}/x.cdf")
    assert not (tmp_path / "data").exists()
