"""Rotated-pole limited-area grids against the real EURO-CORDEX EUR-11 grid."""

from __future__ import annotations

import numpy as np
import pytest

from hpcds.config.schema import GridConfig
from hpcds.errors import GridError
from hpcds.grids import geographic_to_rotated, make_grid, rotated_to_geographic


def lon_diff(a, b):
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def eur11_config(eur11) -> GridConfig:
    area = (f"{eur11['rlat'].max()}/{eur11['rlon'].min()}/"
            f"{eur11['rlat'].min()}/{eur11['rlon'].max()}")
    return GridConfig(name="0.11/0.11", area=area, rotated_pole=list(eur11["pole"]))


def test_eur11_reproduces_the_cordex_coordinates(eur11):
    assert eur11["pole"] == (39.25, -162.0)
    grid = make_grid(eur11_config(eur11))
    assert grid.field_shape == (438, 450) and not grid.is_global
    # native rows run north to south; the file's rlat runs south to north
    lat = grid.to_native(grid.latitudes).reshape(grid.field_shape)[::-1]
    lon = grid.to_native(grid.longitudes).reshape(grid.field_shape)[::-1]
    assert np.max(np.abs(lat - eur11["lat"])) < 1e-4
    assert np.max(np.abs(lon_diff(lon, eur11["lon"]))) < 1e-4


def test_eur11_inverse_gives_the_rotated_axes(eur11):
    rlat, rlon = geographic_to_rotated(eur11["lat"], eur11["lon"], *eur11["pole"])
    assert np.max(np.abs(rlat - eur11["rlat"][:, None])) < 1e-4
    assert np.max(np.abs(rlon - eur11["rlon"][None, :])) < 1e-4


def test_rotation_conventions():
    # the rotated origin lies 90 - pole_lat north of the equator on meridian pole_lon + 180
    lat, lon = rotated_to_geographic(np.array([0.0]), np.array([0.0]), 39.25, -162.0)
    np.testing.assert_allclose([lat[0], lon[0]], [50.75, 18.0], atol=1e-12)
    # the rotated north pole is the pole given
    lat, lon = rotated_to_geographic(np.array([90.0]), np.array([0.0]), 39.25, -162.0)
    np.testing.assert_allclose([lat[0], lon[0] % 360], [39.25, 198.0], atol=1e-9)
    # pole (90, -180) is no rotation at all
    rng = np.random.default_rng(0)
    rlat, rlon = rng.uniform(-80, 80, 50), rng.uniform(0, 360, 50)
    lat, lon = rotated_to_geographic(rlat, rlon, 90.0, -180.0)
    np.testing.assert_allclose(lat, rlat, atol=1e-12)
    assert np.max(np.abs(lon_diff(lon, rlon))) < 1e-12


def test_round_trip():
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(-85, 85, 1000), rng.uniform(-180, 180, 1000)
    rlat, rlon = geographic_to_rotated(lat, lon, 31.7, 12.3)
    back_lat, back_lon = rotated_to_geographic(rlat, rlon, 31.7, 12.3)
    np.testing.assert_allclose(back_lat, lat, atol=1e-10)
    assert np.max(np.abs(lon_diff(back_lon, lon))) < 1e-10


def test_rotated_weights_are_rotated_band_areas():
    grid = make_grid(GridConfig(name="1.0/2.0", area="10/-10/-10/10",
                                rotated_pole=[40.0, -170.0]))
    assert grid.field_shape == (21, 11)
    w = grid.to_native(grid.area_weights).reshape(grid.field_shape)
    rlat = 10.0 - np.arange(21.0)
    band = np.sin(np.deg2rad(rlat + 0.5)) - np.sin(np.deg2rad(rlat - 0.5))
    np.testing.assert_allclose(w, np.outer(band, np.ones(11)) / band.sum() / 11, rtol=1e-12)


@pytest.mark.parametrize("name, area, pole, message", [
    ("O96", "10/-10/-10/10", [40.0, 10.0], "must be regular"),
    ("0.5/0.5", "global", [40.0, 10.0], "needs a limited area"),
    ("0.5/0.5", "10/-10/-10/10", [95.0, 10.0], r"\[-90, 90\]"),
    ("0.5/0.5", "10/-10/-10/10", [40.0], "latitude, longitude"),
])
def test_bad_rotated_grids(name, area, pole, message):
    with pytest.raises(GridError, match=message):
        make_grid(GridConfig(name=name, area=area, rotated_pole=pole))
