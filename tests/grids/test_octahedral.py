"""Octahedral reduced Gaussian grids: sizes, ring layout, Gaussian latitudes, and the real IFS
O320 grid from a GRIB file."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.special import eval_legendre

from hpcds.config.schema import GridConfig
from hpcds.errors import GridError
from hpcds.grids import (gaussian_latitudes, grid_point_count, make_grid, octahedral_pl,
                         octahedral_size)


def test_sizes_of_the_ifs_grids():
    assert octahedral_size(2560) == 26_306_560
    assert grid_point_count(GridConfig(name="O2560")) == 26_306_560
    assert octahedral_size(1280) == 6_599_680
    assert octahedral_size(320) == 421_120
    for n in (1, 2, 7, 48, 320):
        assert octahedral_pl(n).sum() == octahedral_size(n)


def test_ring_sizes_grow_by_four_from_each_pole():
    pl = octahedral_pl(6)
    np.testing.assert_array_equal(pl, [20, 24, 28, 32, 36, 40, 40, 36, 32, 28, 24, 20])
    assert pl.dtype == np.int64


@pytest.mark.parametrize("n", [1, 2, 5, 64, 65, 200])
def test_gaussian_latitudes_match_numpy_leggauss(n):
    lat, w = gaussian_latitudes(n)
    x_ref, w_ref = np.polynomial.legendre.leggauss(n)  # ascending: south to north
    np.testing.assert_allclose(np.sin(np.deg2rad(lat)), x_ref[::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, w_ref[::-1], rtol=0, atol=1e-12)
    assert np.all(np.diff(lat) < 0)  # north to south


def test_gaussian_latitudes_o2560_fast_and_exact():
    t0 = time.perf_counter()
    lat, w = gaussian_latitudes(5120)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"gaussian_latitudes(5120) took {elapsed:.1f} s"
    x = np.sin(np.deg2rad(lat))
    assert abs(w.sum() - 2.0) < 1e-12
    np.testing.assert_allclose(x, -x[::-1], atol=1e-15)
    # roots of P_5120 by scipy's independent evaluation: the Newton correction P/P' that
    # scipy's values imply is at the level of float64 rounding of x
    xs = x[::37]
    p, p_prev = eval_legendre(5120, xs), eval_legendre(5119, xs)
    dp = 5120 * (xs * p - p_prev) / (xs * xs - 1.0)
    assert np.max(np.abs(p / dp)) < 1e-15
    # Gauss quadrature integrates x^(2m) exactly up to degree 2n - 1
    for m in (1, 10, 400, 2000):
        assert abs(np.sum(w * x ** (2 * m)) - 2.0 / (2 * m + 1)) < 1e-12


def test_bad_octahedral_names():
    with pytest.raises(GridError, match="O<N>"):
        make_grid(GridConfig(name="O"))
    with pytest.raises(GridError, match="positive"):
        make_grid(GridConfig(name="O0"))


def test_o320_matches_the_ifs_grib(o320_grib):
    t0 = time.perf_counter()
    grid = make_grid(GridConfig(name="O320"))
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f"make_grid(O320) took {elapsed:.1f} s"
    assert grid.size == o320_grib["latitudes"].size == 421_120
    np.testing.assert_array_equal(octahedral_pl(320), o320_grib["pl"])
    np.testing.assert_allclose(grid.to_native(grid.latitudes), o320_grib["latitudes"],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(grid.to_native(grid.longitudes), o320_grib["longitudes"],
                               rtol=0, atol=1e-6)
    assert grid.field_shape == (421_120,) and grid.is_global


def test_area_weights_integrate_low_degree_harmonics_exactly():
    # Gauss quadrature in latitude and equispaced rings in longitude make the area-weighted
    # mean exact for polynomials in (x, y, z) of low degree: closed-form sphere means
    grid = make_grid(GridConfig(name="O8"))
    x, y, z = grid.unit_vectors().T
    w = grid.area_weights
    assert abs(w.sum() - 1.0) < 1e-14
    assert abs(np.sum(w * z * z) - 1.0 / 3.0) < 1e-14
    assert abs(np.sum(w * x * x) - 1.0 / 3.0) < 1e-14
    assert abs(np.sum(w * z**4) - 1.0 / 5.0) < 1e-14
    assert abs(np.sum(w * x * x * y * y) - 1.0 / 15.0) < 1e-14
    assert abs(np.sum(w * (x + y * z + z**3))) < 1e-14


def test_octahedral_sub_area_selects_the_global_cells_inside():
    whole = make_grid(GridConfig(name="O96"))
    cfg = GridConfig(name="O96", area="60/350/30/20")  # across 0°E
    part = make_grid(cfg)
    assert part.size == grid_point_count(cfg)
    lon_east = (whole.longitudes + 10.0) % 360.0  # 350°E → 0, 20°E → 30
    inside = (whole.latitudes <= 60) & (whole.latitudes >= 30) & (lon_east <= 30.0)
    assert part.size == inside.sum()
    key = lambda lat, lon: set(zip(np.round(lat, 9), np.round(lon % 360.0, 9)))
    assert key(part.latitudes, part.longitudes) == key(whole.latitudes[inside],
                                                       whole.longitudes[inside])
    assert not part.is_global and abs(part.area_weights.sum() - 1.0) < 1e-14
