"""Linear interpolation matrices: partition of unity, second-order accuracy (the error
falls ~4x when the source spacing halves), the ray-plane construction, per-shard rows, and
the error for destinations outside a regional source."""

from __future__ import annotations

import numpy as np
import pytest

from hpcds.config.schema import GridConfig
from hpcds.errors import GridError
from hpcds.grids import (cached_interpolation_matrix, grid_from_name, interpolation_matrix,
                         make_grid, shard_ranges)


def smooth(grid) -> np.ndarray:
    """A low-degree spherical-harmonic mix: Y1 + Y2 terms."""
    x, y, z = grid.unit_vectors().T
    return x + y * z + 0.5 * (3 * z * z - 1)


def check_rows(matrix, n_src):
    assert matrix.shape[1] == n_src
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, rtol=0,
                               atol=1e-12)
    assert matrix.data.min() >= 0.0
    assert np.diff(matrix.indptr).max() <= 3
    np.testing.assert_allclose(matrix @ np.full(n_src, 7.25), 7.25, rtol=0, atol=1e-12)


def test_global_interpolation_is_second_order():
    errors = {}
    for coarse, fine, n in (("O48", "O96", 48), ("O96", "O192", 96)):
        src, dst = grid_from_name(coarse), grid_from_name(fine)
        matrix = interpolation_matrix(src, dst)
        check_rows(matrix, src.size)
        err = np.abs(matrix @ smooth(src) - smooth(dst)).max()
        h = np.pi / (2 * n)  # Gaussian ring spacing (rad)
        assert err < 1.5 * h * h, (coarse, err)
        errors[coarse] = err
    assert errors["O48"] / errors["O96"] > 3.0  # quadratic: ~4 per halving


def test_regional_interpolation_is_second_order():
    dst = grid_from_name("0.25/0.25", "alps")
    errors = []
    for step in (1.0, 0.5):
        src = make_grid(GridConfig(name=f"{step}/{step}", area="alps", margin_deg=2.0))
        matrix = interpolation_matrix(src, dst)
        check_rows(matrix, src.size)
        err = np.abs(matrix @ smooth(src) - smooth(dst)).max()
        assert err < 1.5 * np.deg2rad(step) ** 2
        errors.append(err)
    assert errors[0] / errors[1] > 3.0


def test_weights_are_those_of_the_ray_plane_intersection(o48, o96):
    # interpolating the coordinates themselves gives the point where the ray to each
    # destination meets its triangle's plane: parallel to it, just inside the sphere
    matrix = interpolation_matrix(o48, o96)
    q = matrix @ o48.unit_vectors()
    p = o96.unit_vectors()
    np.testing.assert_allclose(np.cross(q, p), 0.0, atol=1e-12)
    norm = np.linalg.norm(q, axis=1)
    h = np.pi / 96
    assert np.all(norm <= 1 + 1e-12) and np.all(norm > 1 - h * h)


def test_points_on_source_cells_copy_them():
    src = grid_from_name("1.0/1.0", "alps")
    dst = grid_from_name("0.25/0.25", "alps")  # every 4th row and column is a source cell
    matrix = interpolation_matrix(src, dst)
    src_key = {(round(a, 9), round(b, 9)): i
               for i, (a, b) in enumerate(zip(src.latitudes, src.longitudes))}
    hits = 0
    for row, (a, b) in enumerate(zip(dst.latitudes, dst.longitudes)):
        i = src_key.get((round(a, 9), round(b, 9)))
        if i is not None:
            hits += 1
            start, stop = matrix.indptr[row], matrix.indptr[row + 1]
            assert list(matrix.indices[start:stop]) == [i]
            assert matrix.data[start] == 1.0
    assert hits == src.size  # same area: every source cell is also a destination


def test_same_area_edges_are_accepted():
    # HR rows on the LR edge rows lie a hair outside the LR triangulation (parallels are
    # not great circles): they are interpolated along the edge, not rejected
    src = grid_from_name("1.0/1.0", "alps")
    dst = grid_from_name("0.1/0.1", "alps")
    matrix = interpolation_matrix(src, dst)
    check_rows(matrix, src.size)
    assert np.abs(matrix @ smooth(src) - smooth(dst)).max() < 1.5 * np.deg2rad(1.0) ** 2


@pytest.mark.parametrize("src_name, src_area", [("O32", "global"),
                                                ("1.0/1.0", "alps+2")])
def test_shard_rows_equal_full_rows(src_name, src_area):
    if src_area == "alps+2":
        src = make_grid(GridConfig(name=src_name, area="alps", margin_deg=2.0))
        dst = grid_from_name("0.125/0.125", "alps")
    else:
        src, dst = grid_from_name(src_name), grid_from_name("O64")
    full = interpolation_matrix(src, dst)
    for start, stop in shard_ranges(dst.size, 5):
        part = interpolation_matrix(src, dst, rows=(start, stop))
        assert part.shape == (stop - start, src.size)
        expected = full[start:stop]
        np.testing.assert_array_equal(part.indptr, expected.indptr)
        np.testing.assert_array_equal(part.indices, expected.indices)
        np.testing.assert_array_equal(part.data, expected.data)


def test_global_regular_source_with_pole_rows():
    src = grid_from_name("2.0/2.0")  # 180 coincident points at each pole
    dst = grid_from_name("O32")
    matrix = interpolation_matrix(src, dst)
    check_rows(matrix, src.size)
    assert np.abs(matrix @ smooth(src) - smooth(dst)).max() < 1.5 * np.deg2rad(2.0) ** 2


def test_rotated_source():
    src = make_grid(GridConfig(name="0.44/0.44", area="8/-12/-8/12",
                               rotated_pole=[39.25, -162.0]))
    dst = grid_from_name("0.25/0.25", "alps")  # inside: the rotated origin is 50.75N 18E
    matrix = interpolation_matrix(src, dst)
    check_rows(matrix, src.size)
    assert np.abs(matrix @ smooth(src) - smooth(dst)).max() < 1.5 * np.deg2rad(0.44) ** 2


def test_destination_outside_a_regional_source_is_an_error():
    src = grid_from_name("1.0/1.0", "alps")
    dst = grid_from_name("0.25/0.25", "50/4/43/17")  # one degree too far north
    with pytest.raises(GridError) as info:
        interpolation_matrix(src, dst)
    message = str(info.value)
    assert message.startswith("HR grid extends outside the LR domain (")
    assert "cells outside, e.g. lat " in message
    assert message.endswith("enlarge the LR area or shrink the HR area")
    outside = int(message.split("(")[1].split(" ")[0])
    assert outside == int(np.sum(dst.latitudes > 49.0 + 1e-9))  # the rows north of 49°N


def test_cached_matrix_round_trip(o48, o96, tmp_path):
    rows = (100, 900)
    first = cached_interpolation_matrix(o48, o96, rows, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    again = cached_interpolation_matrix(o48, o96, rows, cache_dir=tmp_path)
    fresh = interpolation_matrix(o48, o96, rows)
    for m in (first, again):
        assert m.shape == fresh.shape and (m != fresh).nnz == 0
    entry.write_bytes(b"not a zip file")  # corrupt: rebuilt, not a crash
    assert (cached_interpolation_matrix(o48, o96, rows, cache_dir=tmp_path) != fresh).nnz == 0
