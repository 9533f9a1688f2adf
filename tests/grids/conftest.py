"""Shared fixtures of the grid tests: the real reference files and a few small grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpcds.grids import grid_from_name

TESTDATA = Path(__file__).resolve().parents[2] / ".testdata"
O320_GRIB = "metview/usr/share/mir/masks/lsm.O320.grib"
EUR11_NC = "ncarg/usr/share/ncarg/data/nug/HSURF_regional_model_0.11deg.nc"


def testdata(relative: str) -> Path:
    path = TESTDATA / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/fetch_testdata.sh")
    return path


@pytest.fixture(scope="session")
def o320_grib() -> dict[str, np.ndarray]:
    """latitudes, longitudes (421120,) and pl (640,) of the IFS O320 land-sea mask."""
    eccodes = pytest.importorskip("eccodes")
    with open(testdata(O320_GRIB), "rb") as f:
        handle = eccodes.codes_grib_new_from_file(f)
        try:
            return {key: eccodes.codes_get_array(handle, key)
                    for key in ("latitudes", "longitudes", "pl")}
        finally:
            eccodes.codes_release(handle)


@pytest.fixture(scope="session")
def eur11() -> dict:
    """The EURO-CORDEX EUR-11 grid: rlat (438,), rlon (450,), lat/lon (438, 450) float64,
    pole (lat, lon)."""
    netCDF4 = pytest.importorskip("netCDF4")
    with netCDF4.Dataset(testdata(EUR11_NC)) as ds:
        pole = ds["rotated_pole"]
        return {"rlat": np.asarray(ds["rlat"][:], np.float64),
                "rlon": np.asarray(ds["rlon"][:], np.float64),
                "lat": np.asarray(ds["lat"][:], np.float64),
                "lon": np.asarray(ds["lon"][:], np.float64),
                "pole": (float(pole.grid_north_pole_latitude),
                         float(pole.grid_north_pole_longitude))}


@pytest.fixture(scope="session")
def o48():
    return grid_from_name("O48")


@pytest.fixture(scope="session")
def o96():
    return grid_from_name("O96")

