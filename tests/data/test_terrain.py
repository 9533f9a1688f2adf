"""Real ETOPO5 terrain on grids: known summits and oceans, bilinear values checked against the
raw file, longitude wrap, pyramid level choice, and the missing-file error."""

from pathlib import Path

import netCDF4
import numpy as np
import pytest

from hpcds.data.terrain import (
    grid_spacing_deg,
    load_terrain,
    select_level,
    terrain_on_grid,
    terrain_on_points,
)
from hpcds.errors import UserError
from hpcds.grids.geometry import Grid

ETOPO5 = Path("/usr/share/ferret-vis/data/etopo5.cdf")  # installed by scripts/setup.sh


@pytest.fixture(scope="module")
def terrain():
    return load_terrain(ETOPO5)


def regular_grid(south, north, west, east, step) -> Grid:
    """A hand-made regular lat-lon grid (row-major, north to south)."""
    lat = np.arange(north, south - 1e-9, -step)
    lon = np.arange(west, east + 1e-9, step)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    n = lat2.size
    return Grid(f"test@{step}", lat2.ravel(), lon2.ravel() % 360.0, np.full(n, 1.0 / n),
                np.arange(n), lat2.shape, False)


def test_mont_blanc_massif_is_high_on_a_fine_alps_grid(terrain):
    grid = regular_grid(45.25, 46.5, 6.25, 8.0, 0.125)  # Mont Blanc to Monte Rosa
    elevation, land = terrain_on_grid(terrain, grid)
    assert elevation.max() > 3500.0
    assert land.min() == 1.0  # no sea anywhere near Mont Blanc


def test_himalaya_exceeds_6000_m(terrain):
    elevation, _ = terrain_on_grid(terrain, regular_grid(27.0, 29.0, 85.5, 88.5, 0.125))
    assert elevation.max() > 6000.0


def test_ocean_is_negative_and_sea_land_mask_is_zero_one_at_known_points(terrain):
    # mid-Pacific (given as −150° and 210°), South Atlantic, Sahara, Siberia, Tibet
    lat = np.array([0.0, 0.0, -30.0, 23.0, 62.0, 33.0])
    lon = np.array([-150.0, 210.0, -20.0, 10.0, 100.0, 88.0])
    elevation, land = terrain_on_points(terrain, lat, lon, spacing_deg=0.1)
    assert np.all(elevation[:3] < -2500.0)
    assert elevation[0] == elevation[1]  # same point, both longitude conventions
    np.testing.assert_array_equal(land, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    assert elevation[5] > 4000.0


def _raw_bilinear(lat, lon):
    """Reference: bilinear interpolation written out from the four surrounding raw ETOPO5
    nodes (file order: latitude ascending from −90, longitude ascending from 0; the column
    after the last is the first one again, 360° later)."""
    with netCDF4.Dataset(ETOPO5) as ds:
        lats = ds["ETOPO05_Y"][:].astype(float)
        lons = ds["ETOPO05_X"][:].astype(float)
        i = int(np.searchsorted(lats, lat)) - 1
        rows = ds["ROSE"][i:i + 2, :].astype(float)
    lons = np.append(lons, lons[0] + 360.0)
    rows = np.concatenate([rows, rows[:, :1]], axis=1)
    x = lon % 360.0
    j = int(np.searchsorted(lons, x, side="right")) - 1
    tx = (x - lons[j]) / (lons[j + 1] - lons[j])
    ty = (lat - lats[i]) / (lats[i + 1] - lats[i])
    return ((1 - ty) * ((1 - tx) * rows[0, j] + tx * rows[0, j + 1])
            + ty * ((1 - tx) * rows[1, j] + tx * rows[1, j + 1]))


@pytest.mark.parametrize("lat, lon", [(45.871, 6.8123), (-12.34, 123.456), (51.49, 359.96),
                                      (51.49, -0.02), (60.03, 0.01)])
def test_values_are_bilinear_in_the_raw_file_including_across_the_wrap(terrain, lat, lon):
    elevation, _ = terrain_on_points(terrain, np.array([lat]), np.array([lon]), 0.05)
    assert elevation[0] == pytest.approx(_raw_bilinear(lat, lon), abs=1e-6)


def test_orography_is_surface_height(terrain):
    grid = regular_grid(42.0, 47.0, 3.0, 10.0, 0.125)  # Alps + Ligurian Sea
    relief, land = terrain_on_grid(terrain, grid)
    orography, land2 = terrain_on_grid(terrain, grid, orography=True)
    assert relief.min() < -1000.0 and orography.min() == 0.0
    np.testing.assert_array_equal(land, land2)
    inland = land == 1.0  # all four source nodes are land: clipping changed nothing
    np.testing.assert_allclose(orography[inland], relief[inland])
    assert 0.0 < land.mean() < 1.0 and np.any((land > 0) & (land < 1))  # fractional coasts


def test_spacing_and_pyramid_level(terrain):
    grid = regular_grid(40.0, 50.0, 0.0, 20.0, 1.0)
    # mean distance to the 4 nearest neighbours on a 1° grid near 45°N: (cos 45° + 1)/2 degrees
    assert grid_spacing_deg(grid) == pytest.approx((np.cos(np.deg2rad(45.0)) + 1) / 2, rel=0.02)
    names = {s: select_level(terrain, s).path.name for s in (0.05, 0.125, 0.5, 0.86, 1.5, 5.0)}
    assert names == {0.05: "etopo5.cdf", 0.125: "etopo5.cdf", 0.5: "etopo20.cdf",
                     0.86: "etopo40.cdf", 1.5: "etopo60.cdf", 5.0: "etopo120.cdf"}


def test_coarse_levels_agree_with_fine_at_large_scale(terrain):
    # a 2° grid reads etopo60 (20°-380° longitudes, no pole rows): still the same planet
    coarse = regular_grid(-60.0, 60.0, -180.0, 178.0, 2.0)
    fine_z, fine_land = terrain_on_points(terrain, coarse.latitudes, coarse.longitudes, 0.08)
    z, land = terrain_on_grid(terrain, coarse)
    assert np.corrcoef(z, fine_z)[0, 1] > 0.9
    assert np.mean(np.abs(land - fine_land) < 0.5) > 0.9


def test_missing_file_is_a_user_error_naming_the_package(tmp_path):
    with pytest.raises(UserError, match=r"ETOPO5 terrain not found at .*apt-get install "
                                        r"--no-install-recommends ferret-datasets"):
        load_terrain(tmp_path / "etopo5.cdf")
