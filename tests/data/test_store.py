"""anemoi-datasets stores: round trips checked with plain zarr, xarray and numpy float64."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore, WrapperStore

from hpcds.atomic import parse_temp
from hpcds.data.layout import read_variables_metadata
from hpcds.data.store import create_store, open_store
from hpcds.errors import StoreError, UserError
from hpcds.grids.geometry import Grid

VARIABLES = ["z_500", "t_850", "q_700"]
UNITS = {"z_500": "m2 s-2", "t_850": "K"}
ATTRS = {"provenance": {"tool": "test"}, "hpcds_config": "grid:\n  hr: 30.0/30.0\n"}
DATES = np.arange("2021-03-01T00", "2021-03-02T00", 6, dtype="datetime64[h]").astype("datetime64[s]")


@pytest.fixture
def grid() -> Grid:
    """6 × 12 regular lat-lon; a random permutation stands in for the SFC order."""
    rng = np.random.default_rng(42)
    lat = np.repeat([75.0, 45.0, 15.0, -15.0, -45.0, -75.0], 12)  # native order: row-major
    lon = np.tile(np.arange(12) * 30.0, 6)  # includes longitude 0, which a fill value would mask
    order = rng.permutation(72)  # SFC cell k is native cell order[k]
    weights = np.cos(np.deg2rad(lat[order]))
    return Grid("30.0/30.0", lat[order], lon[order], weights / weights.sum(), order, (6, 12), True)


@pytest.fixture
def values(grid) -> np.ndarray:
    """(time, variable, ensemble, cell) float32 of mixed magnitudes."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((len(DATES), 3, 2, grid.size))
    x[:, 0] = 5.5e4 + 30.0 * x[:, 0]
    x[:, 1] = 270.0 + 10.0 * x[:, 1]
    x[:, 2] = 1e-3 * np.abs(x[:, 2])
    return x.astype(np.float32)


def write(path, grid, values, *, missing=(), skip=(), chunk_cells=16, **kwargs):
    """Write `values` at DATES except `missing` and the time indices in `skip`."""
    with create_store(
        path, grid=grid, variables=VARIABLES, dates=DATES, frequency="6h", units=UNITS,
        ensemble=values.shape[2], chunk_cells=chunk_cells, missing_dates=missing, attrs=ATTRS,
        **kwargs,
    ) as writer:  # fmt: skip
        for t, date in enumerate(DATES):
            if t not in skip and date not in np.asarray(missing, dtype="datetime64[s]"):
                writer.write(t, values[t])
    return writer.store


def siblings(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path))


# ------------------------------------------------------------------------- round trips


def test_round_trip(tmp_path, grid, values):
    store = write(tmp_path / "s.zarr", grid, values)
    assert store.path == str(tmp_path / "s.zarr")
    assert siblings(tmp_path) == ["s.zarr"]

    np.testing.assert_array_equal(store.read(slice(None)), values)
    assert store.read(slice(None)).dtype == np.float32
    np.testing.assert_array_equal(store.dates, DATES)
    assert store.dates.dtype == np.dtype("datetime64[s]")
    np.testing.assert_array_equal(store.latitudes, grid.latitudes)
    np.testing.assert_array_equal(store.longitudes, grid.longitudes)
    np.testing.assert_array_equal(store.native_index, grid.native_index)
    assert (store.n_cells, store.n_ensemble) == (72, 2)
    assert store.variables == VARIABLES
    assert store.frequency == "6h"
    assert store.resolution == "30.0"
    assert store.field_shape == (6, 12)
    assert store.units == {"z_500": "m2 s-2", "t_850": "K", "q_700": ""}
    # per-variable metadata as anemoi-datasets keeps it, the units again for older readers
    assert store.attrs["variables_metadata"] == {"z_500": {"units": "m2 s-2"},
                                                 "t_850": {"units": "K"}, "q_700": {"units": ""}}
    assert store.attrs["units"] == store.units and store.constant_fields is None
    assert store.cell_order == "sfc"
    assert len(store.missing_dates) == 0
    attrs = store.attrs
    assert attrs["name_to_index"] == {"z_500": 0, "t_850": 1, "q_700": 2}
    assert attrs["start_date"] == "2021-03-01T00:00:00"
    assert attrs["end_date"] == "2021-03-01T18:00:00"
    assert attrs["flatten_grid"] is True and attrs["ensemble_dimension"] == 2
    assert attrs["provenance"] == ATTRS["provenance"] and attrs["hpcds_config"] == ATTRS["hpcds_config"]

    # statistics over all dates, members and cells of the stored float32 values
    ref = np.moveaxis(values.astype(np.float64), 1, 0).reshape(3, -1)
    stats = store.statistics
    np.testing.assert_allclose(stats["mean"], ref.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["stdev"], ref.std(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(stats["minimum"], ref.min(axis=1))
    np.testing.assert_array_equal(stats["maximum"], ref.max(axis=1))
    np.testing.assert_allclose(stats["sums"], ref.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["squares"], (ref**2).sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(stats["count"], [ref.shape[1]] * 3)
    np.testing.assert_array_equal(stats["has_nans"], [False] * 3)


def test_metadata_as_anemoi_datasets_writes_it():
    """The attributes `anemoi-datasets create` 0.5.47 wrote for a netCDF source (copied from
    a real store; tests/anemoi create them with the real package): units inside
    `variables_metadata`, no `units` attribute, constant fields listed."""
    attrs = {"variables": ["lsm", "t2m", "z"], "constant_fields": ["lsm", "z"],
             "variables_metadata": {
                 "lsm": {"constant_in_time": True, "mars": {"param": "lsm", "units": "(0 - 1)"},
                         "units": "(0 - 1)"},
                 "t2m": {"mars": {"param": "t2m", "units": "K"}, "units": "K"},
                 "z": {"constant_in_time": True, "mars": {"param": "z"},
                       "units": "m**2 s**-2"}}}
    assert read_variables_metadata(attrs, attrs["variables"]) == {
        "lsm": {"units": "(0 - 1)"}, "t2m": {"units": "K"}, "z": {"units": "m**2 s**-2"}}
    # the older hpcds attribute, and CF names where a store has them
    assert read_variables_metadata({"units": {"a": "K"}, "variables_metadata": {
        "b": {"units": "m", "long_name": "height", "standard_name": "altitude"}}},
        ["a", "b", "c"]) == {"a": {"units": "K"}, "c": {"units": ""},
                             "b": {"units": "m", "long_name": "height",
                                   "standard_name": "altitude"}}


def test_plain_zarr_sees_the_layout(tmp_path, grid, values):
    write(tmp_path / "s.zarr", grid, values)
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group.metadata.zarr_format == 2
    data = group["data"]
    assert data.shape == (4, 3, 2, 72) and data.dtype == np.float32
    assert data.chunks == (1, 3, 1, 16)
    assert data.attrs["_ARRAY_DIMENSIONS"] == ["time", "variable", "ensemble", "cell"]
    np.testing.assert_array_equal(data[...], values)
    assert group["dates"].dtype == np.dtype("datetime64[s]")
    assert group["dates"].attrs["_ARRAY_DIMENSIONS"] == ["time"]
    for name in ("latitudes", "longitudes", "native_index"):
        assert group[name].attrs["_ARRAY_DIMENSIONS"] == ["cell"]
    assert group["native_index"].dtype == np.int64
    for name in ("mean", "stdev", "minimum", "maximum", "sums", "squares", "count"):
        assert group[name].dtype == np.float64 and group[name].shape == (3,)
        assert group[name].attrs["_ARRAY_DIMENSIONS"] == ["variable"]
    assert group["has_nans"].dtype == bool
    assert group.attrs["variables"] == VARIABLES


def test_xarray_opens_the_store(tmp_path, grid, values):
    write(tmp_path / "s.zarr", grid, values)
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert ds["data"].dims == ("time", "variable", "ensemble", "cell")
    np.testing.assert_array_equal(ds["data"].values, values)
    assert np.issubdtype(ds["dates"].dtype, np.datetime64)
    np.testing.assert_array_equal(ds["dates"].values, DATES)
    # no fill value may turn real zeros (longitude 0, native index 0) into NaN
    np.testing.assert_array_equal(ds["longitudes"].values, grid.longitudes)
    assert ds["native_index"].dtype == np.int64
    assert ds["has_nans"].dtype == bool
    assert ds["mean"].dims == ("variable",)
    assert ds.attrs["variables"] == VARIABLES


def test_native_index_restores_the_field(tmp_path, grid):
    native = np.arange(72, dtype=np.float32).reshape(6, 12)  # value = row-major position
    sfc = native.reshape(-1)[grid.native_index]
    one = np.broadcast_to(sfc, (len(DATES), 3, 1, 72)).copy()
    store = write(tmp_path / "s.zarr", grid, one)
    field = np.empty(72, np.float32)
    field[store.native_index] = store.read(0, ["t_850"])[0, 0, 0]
    np.testing.assert_array_equal(field.reshape(store.field_shape), native)


def test_missing_dates_read_as_nan_and_stay_out_of_statistics(tmp_path, grid, values):
    store = write(tmp_path / "s.zarr", grid, values, missing=DATES[1:2])
    np.testing.assert_array_equal(store.missing_dates, DATES[1:2])
    assert store.attrs["missing_dates"] == ["2021-03-01T06:00:00"]
    assert np.isnan(store.read(1)).all()
    np.testing.assert_array_equal(store.read([0, 2, 3]), values[[0, 2, 3]])
    ref = np.moveaxis(values[[0, 2, 3]].astype(np.float64), 1, 0).reshape(3, -1)
    np.testing.assert_allclose(store.statistics["mean"], ref.mean(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(store.statistics["count"], [ref.shape[1]] * 3)
    np.testing.assert_array_equal(store.statistics["has_nans"], [False] * 3)


def test_nan_values_are_flagged(tmp_path, grid, values):
    values = values.copy()
    values[2, 1, 0, 5] = np.nan
    store = write(tmp_path / "s.zarr", grid, values)
    np.testing.assert_array_equal(store.statistics["has_nans"], [False, True, False])
    ref = values[:, 1].astype(np.float64)
    np.testing.assert_allclose(store.statistics["mean"][1], np.nanmean(ref), rtol=1e-12)


def test_pickles_by_path(tmp_path, grid, values):
    store = write(tmp_path / "s.zarr", grid, values)
    again = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(again.read(3), values[3:4])


# -------------------------------------------------------------------------------- reads


def test_read_selections(tmp_path, grid, values):
    store = write(tmp_path / "s.zarr", grid, values)
    cells = np.array([70, 3, 5, 3])  # unsorted, repeated
    out = store.read(-1, ["q_700", "z_500"], cells=cells, ensemble=1)
    assert out.shape == (1, 2, 1, 4)
    np.testing.assert_array_equal(out, values[3:4][:, [2, 0]][:, :, 1:2][..., cells])
    np.testing.assert_array_equal(store.read(np.array([3, 0]), cells=slice(10, 20)), values[[3, 0], ..., 10:20])
    assert store.variable_index(["q_700", "t_850"]) == [2, 1]
    np.testing.assert_array_equal(store.time_index(["2021-03-01T18:00", DATES[0]]), [3, 0])
    with pytest.raises(IndexError, match="time index 4"):
        store.read(4)


def test_unknown_names_and_dates(tmp_path, grid, values):
    store = write(tmp_path / "s.zarr", grid, values)
    with pytest.raises(StoreError, match=r"no variables \['u_10', 'v_10'\]; available: \['z_500', 't_850', 'q_700'\]"):
        store.read(0, ["z_500", "u_10", "v_10"])
    with pytest.raises(StoreError, match="no dates 2021-03-02T00:00:00; it covers 2021-03-01T00:00:00 to 2021-03-01T18:00:00 every 6h"):
        store.time_index(["2021-03-02T00"])


class RecordingStore(WrapperStore):
    """Wraps a store and records every key read from it."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        self.keys.extend(key for key, _ in key_ranges)
        return await self._store.get_partial_values(prototype, key_ranges)


def test_reads_fetch_only_the_chunks_they_need(tmp_path, grid, values):
    write(tmp_path / "s.zarr", grid, values, chunk_cells=16)  # cell chunks 0..4: [0,16) … [64,72)
    recorder = RecordingStore(LocalStore(tmp_path / "s.zarr", read_only=True))
    store = open_store(recorder)

    def fetched(**selection):
        recorder.keys.clear()
        out = store.read(**selection)
        return out, sorted(recorder.keys)

    out, keys = fetched(time=2, cells=slice(10, 40))
    np.testing.assert_array_equal(out, values[2:3, ..., 10:40])
    assert keys == [f"data/2.0.{e}.{c}" for e in (0, 1) for c in (0, 1, 2)]

    out, keys = fetched(time=slice(1, 3), variables=["t_850"], cells=slice(64, 72), ensemble=1)
    np.testing.assert_array_equal(out, values[1:3, 1:2, 1:2, 64:72])
    assert keys == ["data/1.0.1.4", "data/2.0.1.4"]

    cells = np.array([70, 3, 5])
    out, keys = fetched(time=0, cells=cells, ensemble=0)
    np.testing.assert_array_equal(out, values[0:1, :, 0:1][..., cells])
    assert keys == ["data/0.0.0.0", "data/0.0.0.4"]


# --------------------------------------------------------------------- other stores


def plain_store(path, *, zarr_format=2, n_time=2, n_var=2, n_cells=10, ndim=4, attrs=None,
                drop=(), lengths=None):
    """An anemoi-like store written with plain zarr, optionally malformed."""
    rng = np.random.default_rng(0)
    lengths = {"dates": n_time, "latitudes": n_cells, "longitudes": n_cells, **(lengths or {})}
    data = rng.standard_normal((n_time, n_var, 1, n_cells)[:ndim]).astype(np.float32)
    arrays = {
        "data": (data, ["time", "variable", "ensemble", "cell"][:ndim]),
        "dates": (np.arange(lengths["dates"]).astype("datetime64[D]").astype("datetime64[s]"), ["time"]),
        "latitudes": (np.linspace(-80, 80, lengths["latitudes"]), ["cell"]),
        "longitudes": (np.linspace(0, 350, lengths["longitudes"]), ["cell"]),
    }
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.attrs.update({"variables": [f"v{i}" for i in range(n_var)], "frequency": "1d"} if attrs is None else attrs)
    for name, (values, dims) in arrays.items():
        if name in drop:
            continue
        dim_kw = {"dimension_names": dims} if zarr_format == 3 else {}
        array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape, **dim_kw)
        array[...] = values
        if zarr_format == 2:
            array.attrs["_ARRAY_DIMENSIONS"] = dims
    return data


def test_reads_zarr_v3_stores_in_native_order(tmp_path):
    data = plain_store(tmp_path / "v3.zarr", zarr_format=3)
    store = open_store(tmp_path / "v3.zarr")
    assert store.cell_order == "native" and store.native_index is None
    assert store.frequency == "1d" and store.variables == ["v0", "v1"]
    np.testing.assert_array_equal(store.read(slice(None)), data)
    np.testing.assert_array_equal(store.dates, np.array(["1970-01-01", "1970-01-02"], dtype="datetime64[s]"))
    with pytest.raises(StoreError, match="no `mean` statistics array"):
        store.statistics["mean"]
    assert store.statistics.get("has_nans") is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, r"no store at .*; set data.lr_store to an anemoi-datasets store, or run `hpcds data "
                             r"benchmark`"),
        (lambda p: p.mkdir(), r"is not a zarr group"),
        (lambda p: plain_store(p, drop=["data"]), r"has no `data` array: not an anemoi-datasets store"),
        (lambda p: plain_store(p, ndim=3), r"`data` has shape \(2, 2, 1\); expected 4-D"),
        (lambda p: plain_store(p, attrs={}), r"has no `variables` attribute"),
        (lambda p: plain_store(p, drop=["dates"]), r"has no `dates` array"),
        (lambda p: plain_store(p, drop=["longitudes"]), r"has no `longitudes` array"),
        (lambda p: plain_store(p, lengths={"latitudes": 9}), r"`latitudes` has shape \(9,\) but `data` has 10 cells"),
        (lambda p: plain_store(p, attrs={"variables": ["a", "b", "c"]}), r"3 variables listed but `data` has 2"),
        (lambda p: plain_store(p, lengths={"dates": 3}), r"3 dates but `data` has 2 time steps"),
    ],
    ids=["absent", "empty-dir", "no-data", "3d-data", "no-variables", "no-dates", "no-longitudes",
         "latitudes-length", "variables-length", "dates-length"],
)  # fmt: skip
def test_open_errors(tmp_path, make, message):
    path = tmp_path / "bad.zarr"
    make(path)
    with pytest.raises(StoreError, match=message) as info:
        open_store(path, "data.lr_store")
    assert "\n" not in str(info.value)


def test_a_missing_store_names_its_key_also_when_reopened(tmp_path, grid, values):
    with pytest.raises(StoreError, match=r"^no store at \S+$"):  # no key: no guessed one
        open_store(tmp_path / "none.zarr")
    store = open_store(write(tmp_path / "s.zarr", grid, values).path, "data.forcings_store")
    blob = pickle.dumps(store)  # as for a DataLoader worker, which reopens it by path
    shutil.rmtree(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="; set data.forcings_store, run `hpcds data forcings`"):
        pickle.loads(blob)


# ---------------------------------------------------------------- writer checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dates": DATES[[0, 1, 3]]}, r"regular at frequency 6h, but 2021-03-01T06:00:00 is followed by 2021-03-01T18:00:00"),
        ({"frequency": "6 fortnights"}, r"bad frequency '6 fortnights'"),
        ({"missing_dates": ["2021-03-05"]}, r"missing_dates 2021-03-05T00:00:00 are not among"),
        ({"attrs": {"variables": []}}, r"attrs \['variables'\] are set by the store layout"),
        ({"attrs": {"when": np.datetime64("2021")}}, r"attrs must be JSON-serialisable"),
        ({"units": {"u_10": "m s-1"}}, r"units given for unknown variables \['u_10'\]"),
        ({"variables": ["a", "a"]}, r"distinct names"),
    ],
)  # fmt: skip
def test_create_errors(tmp_path, grid, kwargs, message):
    args = {"grid": grid, "variables": VARIABLES, "dates": DATES, "frequency": "6h", **kwargs}
    with pytest.raises(UserError, match=message):  # a ConfigError for the frequency
        create_store(tmp_path / "s.zarr", **args)
    assert siblings(tmp_path) == []


def test_write_errors(tmp_path, grid, values):
    with create_store(tmp_path / "s.zarr", grid=grid, variables=VARIABLES, dates=DATES, frequency="6h",
                      ensemble=2, missing_dates=DATES[3:]) as writer:  # fmt: skip
        with pytest.raises(StoreError, match=r"shape \(3, 1, 72\), expected \(3, 2, 72\)"):
            writer.write(0, values[0, :, :1])
        writer.write(0, values[0])
        with pytest.raises(StoreError, match=r"2021-03-01T00:00:00 \(time index 0\) was already written"):
            writer.write(0, values[0])
        with pytest.raises(StoreError, match=r"2021-03-01T18:00:00 is declared in missing_dates"):
            writer.write(3, values[3])
        writer.write(1, values[1])
        writer.write(2, values[2])
    with pytest.raises(StoreError, match="writer of .* is closed"):
        writer.write(1, values[1])
    np.testing.assert_array_equal(writer.store.read(slice(0, 3)), values[:3])


# -------------------------------------------------------------------------- atomicity


def test_unwritten_dates_fail_and_leave_nothing(tmp_path, grid, values):
    with pytest.raises(StoreError, match=r"dates 2021-03-01T06:00:00, 2021-03-01T18:00:00 were not written"):
        write(tmp_path / "s.zarr", grid, values, skip=(1, 3))
    assert siblings(tmp_path) == []


def test_store_appears_only_when_complete(tmp_path, grid, values):
    path = tmp_path / "s.zarr"
    with create_store(path, grid=grid, variables=VARIABLES, dates=DATES, frequency="6h", ensemble=2) as writer:
        for t in range(len(DATES)):
            writer.write(t, values[t])
            assert not path.exists()
            assert siblings(tmp_path) == [writer.tmp_path.name]
        temp = parse_temp(writer.tmp_path.name)
        assert (temp.output, temp.tag, temp.pid) == ("s.zarr", "tmp", os.getpid())
    assert siblings(tmp_path) == ["s.zarr"]


def test_exception_mid_write_leaves_nothing(tmp_path, grid, values):
    with pytest.raises(RuntimeError, match="boom"):
        with create_store(tmp_path / "s.zarr", grid=grid, variables=VARIABLES, dates=DATES,
                          frequency="6h", ensemble=2) as writer:  # fmt: skip
            writer.write(0, values[0])
            raise RuntimeError("boom")
    assert siblings(tmp_path) == []


def test_existing_store_is_kept_without_overwrite(tmp_path, grid, values):
    path = tmp_path / "s.zarr"
    write(path, grid, values)
    with pytest.raises(StoreError, match=r"s.zarr exists; pass --overwrite \(or overwrite=True\) to replace it"):
        write(path, grid, values + 1)
    np.testing.assert_array_equal(open_store(path).read(slice(None)), values)
    assert siblings(tmp_path) == ["s.zarr"]


def test_overwrite_replaces_only_on_success(tmp_path, grid, values):
    path = tmp_path / "s.zarr"
    write(path, grid, values)
    with pytest.raises(RuntimeError, match="boom"):
        with create_store(path, grid=grid, variables=VARIABLES, dates=DATES, frequency="6h",
                          ensemble=2, overwrite=True) as writer:  # fmt: skip
            writer.write(0, values[0] + 1)
            raise RuntimeError("boom")
    np.testing.assert_array_equal(open_store(path).read(slice(None)), values)
    assert siblings(tmp_path) == ["s.zarr"]

    store = write(path, grid, values + 1, overwrite=True)
    np.testing.assert_array_equal(store.read(slice(None)), values + 1)
    np.testing.assert_array_equal(open_store(path).statistics["maximum"], (values + 1).max(axis=(0, 2, 3)))
    assert siblings(tmp_path) == ["s.zarr"]  # the old store renamed aside is gone too


def test_store_created_meanwhile_is_not_replaced(tmp_path, grid, values):
    path = tmp_path / "s.zarr"
    with pytest.raises(StoreError, match="exists; pass --overwrite"):
        with create_store(path, grid=grid, variables=VARIABLES, dates=DATES, frequency="6h", ensemble=2) as writer:
            for t in range(len(DATES)):
                writer.write(t, values[t])
            write(path, grid, values + 1)  # another process finishes first
    np.testing.assert_array_equal(open_store(path).read(slice(None)), values + 1)
    assert siblings(tmp_path) == ["s.zarr"]
