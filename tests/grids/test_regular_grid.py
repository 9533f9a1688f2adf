"""Regular lat-lon grids: point counts, the lattice of area grids, and area weights against
closed-form band areas."""

from __future__ import annotations

import numpy as np
import pytest

from hpcds.config.schema import GridConfig
from hpcds.errors import GridError
from hpcds.grids import grid_point_count, make_grid


def native_axes(grid):
    lat = grid.to_native(grid.latitudes).reshape(grid.field_shape)
    lon = grid.to_native(grid.longitudes).reshape(grid.field_shape)
    return lat, lon


def test_global_quarter_degree_is_ecmwf_shaped():
    cfg = GridConfig(name="0.25/0.25")
    assert grid_point_count(cfg) == 721 * 1440
    grid = make_grid(GridConfig(name="1.0/1.0"))
    assert grid.field_shape == (181, 360) and grid.is_global
    lat, lon = native_axes(grid)
    np.testing.assert_array_equal(lat[:, 0], np.arange(90, -91, -1))
    np.testing.assert_array_equal(lon[0], np.arange(360))
    assert np.all(lat == lat[:, :1]) and np.all(lon == lon[:1])


def test_area_grid_is_the_global_lattice_inside_the_box():
    grid = make_grid(GridConfig(name="0.125/0.125", area="alps"))
    assert grid.field_shape == (49, 105)
    lat, lon = native_axes(grid)
    np.testing.assert_allclose(lat[:, 0], 49.0 - 0.125 * np.arange(49), atol=1e-12)
    np.testing.assert_allclose(lon[0], 4.0 + 0.125 * np.arange(105), atol=1e-12)
    # edges off the lattice snap inwards to the multiples of the step
    snapped = make_grid(GridConfig(name="0.25/0.25", area="49.1/4.05/42.93/17.0"))
    lat, lon = native_axes(snapped)
    assert (lat[0, 0], lat[-1, 0], lon[0, 0], lon[0, -1]) == (49.0, 43.0, 4.25, 17.0)


def test_area_across_zero_longitude_runs_west_to_east():
    grid = make_grid(GridConfig(name="1.0/1.0", area="60/350/30/20"))
    assert grid.field_shape == (31, 31)
    _, lon = native_axes(grid)
    np.testing.assert_allclose(lon[0], np.r_[np.arange(350, 360), np.arange(0, 21)],
                               atol=1e-9)


def test_area_weights_match_spherical_cap_areas():
    grid = make_grid(GridConfig(name="1.0/1.0"))
    lat, w = grid.latitudes, grid.area_weights
    assert abs(w.sum() - 1.0) < 1e-14
    for edge in (89.0, 60.0, 0.0, -45.0):
        # rows at or north of `edge` own the cap north of edge - 0.5°:
        # its area fraction is (1 - sin(edge - 0.5°)) / 2
        cap = (1.0 - np.sin(np.deg2rad(edge - 0.5))) / 2.0
        assert abs(w[lat >= edge].sum() - cap) < 1e-14
    # every cell of a row has the same weight
    w2d = grid.to_native(w).reshape(grid.field_shape)
    np.testing.assert_allclose(w2d, w2d[:, :1] * np.ones_like(w2d), rtol=1e-14)


def test_regional_weights_follow_cos_latitude_bands():
    grid = make_grid(GridConfig(name="0.5/0.5", area="alps"))
    lat, _ = native_axes(grid)
    w = grid.to_native(grid.area_weights).reshape(grid.field_shape)
    band = np.sin(np.deg2rad(lat[:, 0] + 0.25)) - np.sin(np.deg2rad(lat[:, 0] - 0.25))
    np.testing.assert_allclose(w[:, 0] / w[0, 0], band / band[0], rtol=1e-12)


@pytest.mark.parametrize("name, area, message", [
    ("0.7/1.0", "global", "does not divide 180"),
    ("1.0/0.7", "global", "does not divide 360"),
    ("1.0/1.0", "43.2/4.1/43.1/4.2", "contains no point"),
    ("-1/1", "global", "positive"),
    ("1/2/3", "global", "O<N>"),
    ("0.25", "global", "O<N>"),
    ("N320", "global", "O<N>"),
])
def test_bad_regular_grids(name, area, message):
    with pytest.raises(GridError, match=message):
        make_grid(GridConfig(name=name, area=area))
