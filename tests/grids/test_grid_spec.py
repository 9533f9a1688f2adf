"""make_grid / grid_point_count / describe_grid across every kind of grid."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpcds.config.schema import GridConfig
from hpcds.errors import GridError
from hpcds.grids import describe_grid, grid_from_name, grid_point_count, make_grid
from hpcds.grids.sfc import sfc_keys

CONFIGS = [
    GridConfig(name="O32"),
    GridConfig(name="O160", area="himalaya"),
    GridConfig(name="2.0/2.5"),
    GridConfig(name="0.5/0.5", area="alps", margin_deg=1.0),
    GridConfig(name="1.0/1.0", area="60/350/30/20"),
    GridConfig(name="0.44/0.44", area="5/-10/-5/10", rotated_pole=[39.25, -162.0]),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.name}@{c.area}")
def test_grid_carries_its_kind(cfg):
    """The kind is set where the grid is made, from the config, not parsed back from the
    name; it agrees with describe_grid, and octahedral grids carry their N."""
    grid = make_grid(cfg)
    assert grid.kind == describe_grid(cfg)["kind"] == grid.spec.kind
    assert grid.kind == ("rotated" if cfg.rotated_pole else
                         "octahedral" if cfg.name.startswith("O") else "regular")
    assert (grid.spec.N is not None) == (grid.kind == "octahedral")
    if grid.kind == "octahedral":
        assert f"O{grid.spec.N}" == cfg.name
    assert grid.spec.label == grid.name


def test_grid_made_by_hand_has_no_kind():
    grid = make_grid(CONFIGS[0])
    bare = type(grid)(grid.name, grid.latitudes, grid.longitudes, grid.area_weights,
                      grid.native_index, grid.field_shape, grid.is_global)
    assert bare.spec is None and bare.kind is None


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.name}@{c.area}")
def test_grid_invariants(cfg):
    grid = make_grid(cfg)
    n = grid.size
    assert n == grid_point_count(cfg) == int(np.prod(grid.field_shape))
    assert describe_grid(cfg)["points"] == n
    for array in (grid.latitudes, grid.longitudes, grid.area_weights):
        assert array.shape == (n,) and array.dtype == np.float64
    assert grid.native_index.dtype == np.int64
    np.testing.assert_array_equal(np.sort(grid.native_index), np.arange(n))
    assert np.all((grid.longitudes >= 0) & (grid.longitudes < 360))
    assert np.all(np.abs(grid.latitudes) <= 90)
    assert np.all(grid.area_weights > 0) and abs(grid.area_weights.sum() - 1) < 1e-12
    # SFC order: keys never decrease along the stored order
    keys = sfc_keys(grid.unit_vectors())
    assert np.all(np.diff(keys.astype(np.float64)) >= 0)
    # native round trip
    values = np.arange(n, dtype=np.float64)
    np.testing.assert_array_equal(grid.from_native(grid.to_native(values)), values)
    assert grid.is_global == (cfg.area == "global")


def test_native_order_is_rows_north_to_south():
    grid = make_grid(GridConfig(name="2.0/2.5"))
    lat = grid.to_native(grid.latitudes).reshape(grid.field_shape)
    lon = grid.to_native(grid.longitudes).reshape(grid.field_shape)
    assert np.all(np.diff(lat[:, 0]) < 0) and np.all(np.diff(lon[0]) > 0)


def test_labels_tell_grids_apart():
    names = {make_grid(cfg).name for cfg in CONFIGS}
    assert len(names) == len(CONFIGS)
    assert grid_from_name("O32").name == "O32"
    # "<area>@<grid>": the part after the last "@" is the grid name (store attributes use it)
    assert grid_from_name("1.0/1.0", "alps").name == "alps@1.0/1.0"
    assert make_grid(GridConfig(name="O96", area="alps", margin_deg=2)).name == "alps+2@O96"
    assert grid_from_name("0.5/0.5", "49.0/4/43/17.00").name == "49/4/43/17@0.5/0.5"


def test_describe_o2560_without_building_it():
    t0 = time.perf_counter()
    info = describe_grid(GridConfig(name="O2560"))
    assert time.perf_counter() - t0 < 5.0
    assert info["points"] == 26_306_560 and info["rings"] == 5120
    assert info["kind"] == "octahedral" and info["is_global"]
    assert abs(info["spacing_km"] - 4.4) < 0.05  # the figure quoted for O2560


def test_describe_regional_and_rotated():
    info = describe_grid(GridConfig(name="0.25/0.25", area="60/350/30/20"))
    assert info["field_shape"] == (121, 121)
    assert info["lat_range"] == (30.0, 60.0) and info["lon_range"] == (-10.0, 20.0)
    assert abs(info["spacing_km"] - 27.8) < 0.1
    rot = GridConfig(name="0.44/0.44", area="5/-10/-5/10", rotated_pole=[39.25, -162.0])
    info = describe_grid(rot)
    grid = make_grid(rot)
    assert info["kind"] == "rotated"
    assert info["lat_range"] == (grid.latitudes.min(), grid.latitudes.max())
    west, east = info["lon_range"]
    assert west < 18.0 < east and east - west < 40  # centred on 18°E, across no seam


def test_unknown_names_list_the_accepted_forms():
    with pytest.raises(GridError, match=r"O<N>.*<dlat>/<dlon>"):
        grid_point_count(GridConfig(name="era5"))



@pytest.mark.slow
def test_o2560_builds():
    # ~25 s and ~5 GB on a laptop-class CPU
    grid = make_grid(GridConfig(name="O2560"))
    assert grid.size == 26_306_560
    np.testing.assert_array_equal(np.bincount(grid.native_index, minlength=grid.size), 1)
