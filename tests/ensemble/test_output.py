"""The ensemble output store: atomic creation, region writes, done flags, resumption checks,
and what xarray and the anemoi reader see."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
import zarr

from hpcds.data.store import open_store
from hpcds.ensemble import output
from hpcds.ensemble.output import (EnsembleLayout, EnsembleStore, create_ensemble_store,
                                   open_or_create, regular_axis)
from hpcds.errors import StoreError
from hpcds.grids.geometry import Grid

VARIABLES = ("2t", "10u", "tp", "foo")
DATES = np.arange("2026-01-01T00", "2026-01-02T00", 6, dtype="datetime64[h]").astype(
    "datetime64[s]")
IDENTITY = {"checkpoint_sha256": "ab" * 32, "seed": 0, "solver": "heun"}
# an HR store's metadata as `Store.variables_metadata` reads it from anemoi-datasets' (no
# long_name there; "mars" is anemoi's and is not a CF key, so it is not carried)
HR_METADATA = {"foo": {"units": "kg", "mars": {"param": "foo"}},
               "tp": {"units": "kg m-2", "long_name": "precipitation (store)"}}


@pytest.fixture
def grid() -> Grid:
    """4 × 10 regular lat-lon cells; a permutation stands in for the SFC order."""
    rng = np.random.default_rng(3)
    lat = np.repeat([60.0, 20.0, -20.0, -60.0], 10)
    lon = np.tile(np.arange(10) * 36.0, 4)
    order = rng.permutation(40)
    w = np.cos(np.deg2rad(lat[order]))
    return Grid("36.0/36.0", lat[order], lon[order], w / w.sum(), order, (4, 10), True)


def layout(grid, dates=DATES, lr_members=1, members=3, **kw) -> EnsembleLayout:
    return EnsembleLayout(grid=grid, variables=VARIABLES, dates=dates, frequency="6h",
                          lr_members=lr_members, members=members, chunk_cells=16, **kw)


def make(path, grid, **kw):
    return create_ensemble_store(path, layout(grid, **kw), metadata=HR_METADATA,
                                 identity=IDENTITY, provenance={"tool": "test"},
                                 config_yaml="sampling:\n  seed: 0\n")


def values(t, members, n_cells=40) -> np.ndarray:
    """(member, variable, cell) float32 that encode where they belong."""
    m = np.asarray(members)[:, None, None]
    v = np.arange(len(VARIABLES))[None, :, None]
    c = np.arange(n_cells)[None, None, :]
    return (1000.0 * t + 100.0 * m + 10.0 * v + 0.01 * c).astype(np.float32)


def test_regions_and_done_flags_round_trip(tmp_path, grid):
    store = make(tmp_path / "e.zarr", grid, lr_members=2, members=2)
    assert store.shape == (len(DATES), len(VARIABLES), 4, 40)
    assert not store.done().any()
    store.write(1, [2, 3], values(1, [2, 3]))  # a batch spanning two chunks of the member axis
    store.mark_done(1, [2, 3])
    # a (member, cell range) region, as a model-parallel rank writes it
    store.write(3, [0], values(3, [0])[:, :, :16], cells=slice(0, 16))
    store.write(3, [0], values(3, [0])[:, :, 16:], cells=slice(16, 40))
    store.mark_done(3, [0])
    reopened = EnsembleStore.open(tmp_path / "e.zarr")
    done = reopened.done()
    assert done.sum() == 3 and done[1, 2] and done[1, 3] and done[3, 0]
    np.testing.assert_array_equal(reopened.read(1, [2, 3])[0].transpose(1, 0, 2),
                                  values(1, [2, 3]))
    np.testing.assert_array_equal(reopened.read(3, [0])[0, :, 0], values(3, [0])[0])
    assert np.isnan(reopened.read(0)).all()  # unwritten: NaN
    assert not reopened.complete()
    with pytest.raises(StoreError, match="read-only"):
        reopened.write(0, [0], values(0, [0]))
    with pytest.raises(StoreError, match="expected"):
        store.write(0, [0, 1], values(0, [0]))


def test_chunks_keep_writers_apart(tmp_path, grid):
    make(tmp_path / "e.zarr", grid, members=3)
    group = zarr.open_group(tmp_path / "e.zarr", mode="r")
    assert group["data"].chunks == (1, len(VARIABLES), 1, 16)
    assert group["done"].chunks == (1, 1) and group["done"].dtype == np.uint8


def test_rerun_skips_done_pairs_and_counts_writes(tmp_path, grid):
    path = tmp_path / "e.zarr"
    writes = []

    def run(crash_after=None):
        store, created = open_or_create(path, layout(grid), identity=IDENTITY)
        done = store.done()
        for t in range(len(DATES)):
            for m in range(store.n_members):
                if done[t, m]:
                    continue
                if crash_after is not None and len(writes) == crash_after:
                    raise RuntimeError("killed")
                store.write(t, [m], values(t, [m]))
                store.mark_done(t, [m])
                writes.append((t, m))
        return store, created

    with pytest.raises(RuntimeError, match="killed"):
        run(crash_after=5)
    assert len(writes) == 5
    store, created = run()
    assert not created
    assert len(writes) == len(DATES) * 3  # the 5 finished pairs were not written again
    assert len(set(writes)) == len(writes)
    assert store.complete()
    for t in range(len(DATES)):
        np.testing.assert_array_equal(store.read(t)[0].transpose(1, 0, 2),
                                      values(t, range(3)))
    run()  # a third run writes nothing
    assert len(writes) == len(DATES) * 3


@pytest.mark.parametrize("change, message", [
    (dict(members=4), "members per LR member 3 there, 4 now"),
    (dict(lr_members=2), "LR members 1 there, 2 now"),
    (dict(dates=DATES[:2]), "dates"),
    (dict(identity={**IDENTITY, "seed": 1}), "seed 0 there, 1 now"),
    (dict(identity={**IDENTITY, "checkpoint_sha256": "cd" * 32}), "checkpoint_sha256"),
    (dict(variables=("2t",)), "variables"),
])
def test_mismatching_rerun_is_a_clear_error(tmp_path, grid, change, message):
    path = tmp_path / "e.zarr"
    make(path, grid)
    identity = change.pop("identity", IDENTITY)
    lay = layout(grid, **{k: v for k, v in change.items() if k != "variables"})
    if "variables" in change:
        lay = EnsembleLayout(**{**lay.__dict__, "variables": change["variables"]})
    with pytest.raises(StoreError, match=message) as err:
        open_or_create(path, lay, identity=identity)
    assert "--overwrite" in str(err.value) and "sampling.output" in str(err.value)
    # --overwrite replaces it with a fresh store
    store, created = open_or_create(path, lay, identity=identity, overwrite=True)
    assert created and not store.done().any()


def test_marker_is_not_anemois_format_and_old_stores_still_open(tmp_path, grid):
    """anemoi-datasets reads `format` as its layout name (and refuses ours): the marker is
    `hpcds_format`; stores written before, with `format`, still open."""
    make(tmp_path / "e.zarr", grid)
    group = zarr.open_group(tmp_path / "e.zarr", mode="r+")
    assert group.attrs["hpcds_format"] == "hpcds-ensemble"
    assert "format" not in group.attrs and "layout" not in group.attrs
    attrs = dict(group.attrs)
    attrs["format"] = attrs.pop("hpcds_format")  # as stores written before this change
    group.attrs.clear()
    group.attrs.update(attrs)
    zarr.consolidate_metadata(tmp_path / "e.zarr", zarr_format=2)
    assert EnsembleStore.open(tmp_path / "e.zarr").n_members == 3
    attrs.pop("format")
    group.attrs.clear()
    group.attrs.update(attrs)
    zarr.consolidate_metadata(tmp_path / "e.zarr", zarr_format=2)
    with pytest.raises(StoreError, match="no hpcds_format='hpcds-ensemble' attribute"):
        EnsembleStore.open(tmp_path / "e.zarr")


def test_existing_non_ensemble_path_is_an_error(tmp_path, grid):
    (tmp_path / "e.zarr").mkdir()
    with pytest.raises(StoreError, match="not"):
        open_or_create(tmp_path / "e.zarr", layout(grid), identity=IDENTITY)
    with pytest.raises(StoreError, match="exists"):
        make(tmp_path / "e.zarr", grid)


def test_xarray_opens_it_with_dims_coords_dates_and_cf_attrs(tmp_path, grid):
    store = make(tmp_path / "e.zarr", grid, lr_members=2, members=2)
    store.write(0, [0, 1, 2, 3], values(0, range(4)))
    store.mark_done(0, range(4))
    ds = xr.open_zarr(tmp_path / "e.zarr")
    assert ds["data"].dims == ("time", "variable", "ensemble", "cell")
    assert ds["done"].dims == ("time", "ensemble") and ds["done"].dtype == np.uint8
    for name in ("dates", "latitudes", "longitudes", "lr_member", "variable"):
        assert name in ds.coords
    assert np.issubdtype(ds["dates"].dtype, np.datetime64)
    np.testing.assert_array_equal(ds["dates"].values, DATES)
    np.testing.assert_array_equal(ds["lr_member"].values, [0, 0, 1, 1])
    assert list(ds["variable"].values) == list(VARIABLES)
    np.testing.assert_array_equal(ds["longitudes"].values, grid.longitudes)  # 0 not masked
    assert ds["native_index"].dtype == np.int64
    assert ds["latitudes"].attrs["units"] == "degrees_north"
    np.testing.assert_array_equal(ds["data"].sel(variable="10u").isel(time=0).values,
                                  values(0, range(4))[:, 1])
    meta = ds.attrs["variables_metadata"]
    assert meta["2t"] == {"standard_name": "air_temperature", "long_name": "2 metre temperature",
                          "units": "K"}
    assert meta["10u"]["standard_name"] == "eastward_wind" and meta["10u"]["units"] == "m s-1"
    # the HR store's keys win over the table's, key by key; the table fills the rest
    assert meta["tp"] == {"standard_name": "precipitation_amount", "units": "kg m-2",
                          "long_name": "precipitation (store)"}
    assert meta["foo"] == {"units": "kg"}  # unknown to the CF table: from the HR store only
    assert ds.attrs["units"] == {"2t": "K", "10u": "m s-1", "tp": "kg m-2", "foo": "kg"}
    assert ds.attrs["units"]["2t"] == "K" and ds.attrs["ensemble_dimension"] == 2
    assert ds.attrs["provenance"] == {"tool": "test"}
    assert ds.attrs["identity"] == IDENTITY
    assert ds.attrs["hpcds_config"].startswith("sampling:")
    assert "mean" not in ds  # no statistics arrays (documented)


def test_anemoi_reader_opens_it(tmp_path, grid):
    store = make(tmp_path / "e.zarr", grid, members=3)
    store.write(2, [1], values(2, [1]))
    s = open_store(tmp_path / "e.zarr")
    assert s.shape == (len(DATES), len(VARIABLES), 3, 40) and s.cell_order == "sfc"
    np.testing.assert_array_equal(s.read(2, ensemble=1)[0, :, 0], values(2, [1])[0])
    np.testing.assert_array_equal(s.native_index, grid.native_index)


def test_gaps_are_declared_missing(tmp_path, grid):
    dates = DATES[[0, 1, 3]]
    store = make(tmp_path / "e.zarr", grid, dates=dates)
    np.testing.assert_array_equal(store.dates, DATES)
    np.testing.assert_array_equal(store.missing_dates, DATES[[2]])
    np.testing.assert_array_equal(store.sampled(), [True, True, False, True])
    with pytest.raises(StoreError, match="declared missing"):
        store.write(2, [0], values(2, [0]))
    with pytest.raises(StoreError, match="grid"):
        regular_axis(np.array([DATES[0], DATES[0] + np.timedelta64(1, "h")]),
                     np.timedelta64(6, "h"))


def test_creation_is_atomic(tmp_path, grid, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(output.zarr, "consolidate_metadata", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        make(tmp_path / "e.zarr", grid)
    assert os.listdir(tmp_path) == []  # neither the store nor a temporary sibling
