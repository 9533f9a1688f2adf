"""Matching a store's cells to a grid: the native order without a search, any other order
(e.g. anemoi-datasets keeping a netCDF file's south-to-north rows) by coordinates."""

from types import SimpleNamespace

import numpy as np
import pytest

from hpcds.config.schema import GridConfig
from hpcds.data.cells import store_cells_for_grid
from hpcds.errors import DataCheckError
from hpcds.grids import make_grid

GRID = make_grid(GridConfig(name="1.0/1.0", area="48/6/44/14"))  # 5 rows × 9 columns


def fake_store(lat, lon):
    """What store_cells_for_grid reads from a Store in a non-SFC order."""
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    return SimpleNamespace(path="s.zarr", n_cells=lat.size, cell_order="native",
                           latitudes=lat, longitudes=lon,
                           coordinates_at=lambda cells: (lat[cells], lon[cells]))


def native_coordinates():
    lat, lon = np.empty(GRID.size), np.empty(GRID.size)
    lat[GRID.native_index], lon[GRID.native_index] = GRID.latitudes, GRID.longitudes
    return lat.reshape(GRID.field_shape), lon.reshape(GRID.field_shape)


def test_native_order_is_taken_as_is():
    lat, lon = native_coordinates()
    index = store_cells_for_grid(fake_store(lat.ravel(), lon.ravel()), GRID, "the HR store", "")
    np.testing.assert_array_equal(index, GRID.native_index)


def test_rows_south_to_north_are_matched_by_coordinates():
    lat, lon = native_coordinates()
    assert lat[0, 0] == 48.0  # native: north first
    store = fake_store(lat[::-1].ravel(), lon[::-1].ravel() - 360.0)  # and longitudes < 0
    nlat, nlon = GRID.field_shape
    row, col = np.divmod(GRID.native_index, nlon)
    expected = (nlat - 1 - row) * nlon + col  # where each grid cell sits in the flipped store
    index = store_cells_for_grid(store, GRID, "the HR store", "")
    np.testing.assert_array_equal(index, expected)
    shard = store_cells_for_grid(store, GRID, "the HR store", "", cells=(10, 30))
    np.testing.assert_array_equal(shard, expected[10:30])


def test_other_points_or_a_missing_one_are_refused():
    lat, lon = native_coordinates()
    # 0.25° of longitude at 44°N, the southern row, is 0.18° of arc
    with pytest.raises(DataCheckError, match=r"on another grid than .*1.0/1.0 \(coordinates "
                                             r"differ by up to 0.18°\): set grid.hr"):
        store_cells_for_grid(fake_store(lat.ravel()[::-1], lon.ravel()[::-1] + 0.25), GRID,
                             "the HR store", "set grid.hr")
    lat, lon = lat.ravel().copy(), lon.ravel().copy()
    lat[3], lon[3] = lat[4], lon[4]  # cell 3 missing: 1° of longitude from cell 4 at 48°N
    with pytest.raises(DataCheckError, match=r"differ by up to 0.669°\): fix"):
        store_cells_for_grid(fake_store(lat[::-1], lon[::-1]), GRID, "the HR store", "fix")
