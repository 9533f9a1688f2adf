"""anemoi-datasets zarr stores: an atomic streaming writer and a chunk-aware reader.

Layout (a zarr group; written as zarr_format 2 like anemoi-datasets, read as 2 or 3):

    data        (time, variable, ensemble, cell) float32, chunks (1, n_var, 1, chunk_cells)
    dates       (time,) datetime64[s]
    latitudes   (cell,) float64        longitudes (cell,) float64
    native_index (cell,) int64         position of each cell in the grid's native order
    mean, stdev, minimum, maximum, sums, squares, count (variable,) float64; has_nans bool
    attrs: variables, name_to_index, frequency, start_date, end_date, missing_dates,
           resolution, field_shape, flatten_grid, ensemble_dimension, units,
           variables_metadata, cell_order, …

Each array carries ``_ARRAY_DIMENSIONS`` so xarray opens the group as a Dataset. Chunks span
all variables but only ``chunk_cells`` cells, so a model-parallel rank that owns a contiguous
range of SFC-ordered cells reads only its own chunks.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from hpcds.atomic import exists_error, publish_dir, remove_path, writing
from hpcds.data.chunks import axis_key, decoding, wait_for_pending_io
from hpcds.data.dates import as_dates, frequency_string, iso, list_dates, parse_frequency
from hpcds.data.layout import (DIMS, add_array, anemoi_root_attrs, create_data_array,
                               group_coordinates, new_group, read_variables_metadata,
                               write_grid_coordinates)
from hpcds.data.stats import RunningStats
from hpcds.errors import StoreError
from hpcds.grids.geometry import Grid

STATISTICS = ("mean", "stdev", "minimum", "maximum", "sums", "squares", "count", "has_nans")
_STATS_BLOCK = 1 << 20  # cells per statistics update: bounds the float64 temporaries
# what to do about a missing store, by the config key that names it
_PAIR_FIX = ("set {key} to an anemoi-datasets store, or run `hpcds data benchmark` (a "
             "synthetic pair)")
MISSING_STORE_FIX = {
    "data.lr_store": _PAIR_FIX,
    "data.hr_store": _PAIR_FIX,
    "data.forcings_store": "set {key}, run `hpcds data forcings` (static fields from ETOPO5 on "
                           "grid.hr), or set data.static.source=hr_store (the HR store's "
                           "constant fields)",
}


# -------------------------------------------------------------------------------- writer


def create_store(
    path: str | os.PathLike,
    *,
    grid: Grid,
    variables: Sequence[str],
    dates: np.ndarray,
    frequency: str,
    units: dict[str, str] | None = None,
    ensemble: int = 1,
    chunk_cells: int = 65536,
    missing_dates: Sequence = (),
    resolution: str | None = None,
    attrs: dict | None = None,
    overwrite: bool = False,
) -> StoreWriter:
    """Start writing a store at `path`; returns a ``StoreWriter`` (use it as a context manager).

    grid:          the cells, in its SFC order; latitudes/longitudes/native_index come from it.
    variables:     names, in the order of the variable axis.
    dates:         (time,) datetime64 (or ISO strings), regular at `frequency`, e.g. "6h".
    missing_dates: dates declared absent: never written, read back as NaN, not in statistics.
    resolution:    the anemoi ``resolution`` attribute; derived from ``grid.name`` if omitted.
    attrs:         extra JSON-serialisable root attributes (e.g. provenance, hpcds_config).

    The store is built under a temporary sibling (`hpcds.atomic.temp_sibling`) and renamed to
    `path` by ``close()``; an existing `path` is an error unless `overwrite`.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise exists_error(path)
    variables = [str(v) for v in variables]
    if not variables or len(set(variables)) != len(variables):
        raise StoreError(f"variables {variables} must be a non-empty list of distinct names")
    dates = as_dates(dates, "dates")
    step = parse_frequency(frequency)
    if len(dates) == 0:
        raise StoreError("dates is empty; a store needs at least one date")
    irregular = np.flatnonzero(np.diff(dates) != step)
    if irregular.size:
        i = int(irregular[0])
        raise StoreError(
            f"dates must be regular at frequency {frequency}, but {iso(dates[i])} is followed by "
            f"{iso(dates[i + 1])}; list every date and declare gaps in missing_dates"
        )
    missing = as_dates(missing_dates, "missing_dates")
    unknown = np.setdiff1d(missing, dates)
    if unknown.size:
        raise StoreError(f"missing_dates {list_dates(unknown)} are not among the store's dates")
    units = dict(units or {})
    unknown_units = sorted(set(units) - set(variables))
    if unknown_units:
        raise StoreError(f"units given for unknown variables {unknown_units}; "
                         f"the variables are {variables}")
    if int(ensemble) < 1 or int(chunk_cells) < 1:
        raise StoreError(f"ensemble ({ensemble}) and chunk_cells ({chunk_cells}) must be ≥ 1")

    n_cells = grid.size
    root_attrs = anemoi_root_attrs(grid, variables, step, dates, missing,
                                   {v: {"units": units.get(v, "")} for v in variables},
                                   resolution)
    extra = dict(attrs or {})
    reserved = sorted(set(extra) & set(root_attrs))
    if reserved:
        raise StoreError(f"attrs {reserved} are set by the store layout; rename them")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"attrs must be JSON-serialisable ({e}); convert them to plain types"
                         ) from None
    root_attrs.update(extra)

    with new_group(path) as (tmp, group):
        # unwritten (missing) dates read back as NaN
        data = create_data_array(group, (len(dates), len(variables), int(ensemble), n_cells),
                                 chunk_cells)
        add_array(group, "dates", dates, ["time"])
        write_grid_coordinates(group, grid)
        group.attrs.update(root_attrs)
    return StoreWriter(path, tmp, data, dates, missing, variables, overwrite)


class StoreWriter:
    """Writes one date at a time into a temporary store and publishes it on ``close()``.

    Statistics are accumulated with ``RunningStats`` from the float32 values as stored, over
    all written dates, members and cells (unweighted, as anemoi-datasets does).
    """

    def __init__(self, path, tmp, data, dates, missing, variables, overwrite):
        self.path, self.tmp_path = Path(path), Path(tmp)
        self._data = data
        self._dates = dates
        self._missing = np.isin(dates, missing)
        self._written = np.zeros(len(dates), dtype=bool)
        self._overwrite = overwrite
        self.stats = RunningStats(variables)
        self.store: Store | None = None  # set by a successful close()
        self._closed = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False

    def write(self, time_index: int, values: np.ndarray) -> None:
        """Store `values`, (variable, ensemble, cell), as date number `time_index`."""
        if self._closed:
            raise StoreError(f"the writer of {self.path} is closed; create a new one to write")
        t = operator.index(time_index)
        if not 0 <= t < len(self._dates):
            raise StoreError(f"time index {t} is outside the store's {len(self._dates)} dates")
        date = iso(self._dates[t])
        if self._missing[t]:
            raise StoreError(f"date {date} is declared in missing_dates; remove it there to write")
        if self._written[t]:
            raise StoreError(f"date {date} (time index {t}) was already written; write it once")
        values = np.asarray(values)
        if values.shape != self._data.shape[1:]:
            raise StoreError(f"values for {date} have shape {values.shape}, expected "
                             f"{self._data.shape[1:]} (variable, ensemble, cell)")
        values = values.astype(np.float32, copy=False)
        with writing(self.path):
            self._data[t] = values
        # statistics of the float32 values, as a reader sees them, a block of cells at a time
        for start in range(0, values.shape[-1], _STATS_BLOCK):
            self.stats.update(values[..., start:start + _STATS_BLOCK], variable_axis=0)
        self._written[t] = True

    def close(self) -> Store:
        """Write the statistics, publish the store at `path` and return it opened.

        Fails (and removes the temporary store) if a date was neither written nor declared
        missing, or if `path` appeared meanwhile and ``overwrite`` is False.
        """
        if self.store is not None:
            return self.store
        if self._closed:
            raise StoreError(f"the writer of {self.path} was aborted; nothing was published")
        try:
            unwritten = self._dates[~self._written & ~self._missing]
            if unwritten.size:
                raise StoreError(
                    f"{self.path}: dates {list_dates(unwritten)} were not written; write them or "
                    f"declare them in missing_dates"
                )
            with writing(self.path):
                group = zarr.open_group(self.tmp_path, mode="r+", zarr_format=2)
                for name, values in self.stats.arrays().items():
                    add_array(group, name, values, ["variable"])
                # one metadata read for readers (and xarray) instead of one per array
                zarr.consolidate_metadata(self.tmp_path, zarr_format=2)
                publish_dir(self.tmp_path, self.path, overwrite=self._overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self.store = open_store(self.path)
        return self.store

    def abort(self) -> None:
        """Discard the temporary store; an existing store at `path` is left as it was."""
        self._closed = True
        wait_for_pending_io()  # chunk writes still in flight would re-create parts of it
        remove_path(self.tmp_path)


# -------------------------------------------------------------------------------- reader


def open_store(path: str | os.PathLike | zarr.storage.StoreLike, key: str | None = None
               ) -> Store:
    """Open and check a store: a directory, or any zarr StoreLike (remote, wrapped, …);
    `key`: the config key that names it, for the error if there is none (and a reopening's)."""
    if isinstance(path, (str, os.PathLike)):
        if not Path(path).exists():
            fix = ("; " + MISSING_STORE_FIX.get(key, "set {key}").format(key=key)) if key else ""
            raise StoreError(f"no store at {path}{fix}")
        source = str(path)
    else:
        source = path
    try:
        group = zarr.open_group(source, mode="r")
    except (zarr.errors.BaseZarrError, OSError, ValueError) as e:
        raise StoreError(f"{path} is not a zarr group ({type(e).__name__}); "
                         "point to an anemoi-datasets store") from None
    by_path = isinstance(path, (str, os.PathLike))
    return Store(group, str(path) if by_path else repr(path), reopen=by_path, key=key)


class Store:
    """A read-only anemoi-datasets store: coordinates load lazily, `read` fetches only its chunks.

    path, variables, dates (time,) datetime64[s], frequency, missing_dates (datetime64[s]),
    resolution, field_shape, units ({variable: units}, "" where unknown), variables_metadata
    ({variable: {units, standard_name?, long_name?}}), constant_fields (None when the store
    does not say), cell_order ("sfc" or "native"), attrs (all root attributes), n_cells,
    n_ensemble; latitudes/longitudes/native_index/statistics are read on first use.
    """

    def __init__(self, group: zarr.Group, path: str, reopen: bool = False,
                 key: str | None = None):
        self.path = path
        self._reopen = reopen  # whether `path` alone can reopen it (for pickling)
        self._key = key  # the config key naming it, for a reopening's errors
        self._group = group
        self.attrs: dict = dict(group.attrs)
        data = self._array("data", "not an anemoi-datasets store")
        if data.ndim != 4:
            raise StoreError(f"{path}: `data` has shape {data.shape}; expected 4-D {DIMS}")
        self._data = data
        if "variables" not in self.attrs:
            raise StoreError(f"{path} has no `variables` attribute; not an anemoi-datasets store")
        self.variables: list[str] = [str(v) for v in self.attrs["variables"]]
        n_time, n_var, self.n_ensemble, self.n_cells = (int(s) for s in data.shape)
        if len(self.variables) != n_var:
            raise StoreError(f"{path}: {len(self.variables)} variables listed but `data` has "
                             f"{n_var}")
        self.dates = self._read_dates()
        if len(self.dates) != n_time:
            raise StoreError(f"{path}: {len(self.dates)} dates but `data` has {n_time} time steps")
        coords = ["latitudes", "longitudes"] + (["native_index"] if "native_index" in group else [])
        for name in coords:
            shape = self._array(name, "it needs the cell coordinates").shape
            if shape != (self.n_cells,):
                raise StoreError(f"{path}: `{name}` has shape {shape} but `data` has "
                                 f"{self.n_cells} cells")

        frequency = self.attrs.get("frequency")
        if isinstance(frequency, int):  # older anemoi-datasets stored hours as an integer
            frequency = f"{frequency}h"
        elif not frequency and n_time > 1:
            frequency = frequency_string(self.dates[1] - self.dates[0])
        self.frequency: str = str(frequency or "")
        self.missing_dates = as_dates(self.attrs.get("missing_dates", []), "missing_dates")
        self.resolution: str | None = self.attrs.get("resolution")
        fs = self.attrs.get("field_shape")
        self.field_shape: tuple[int, ...] | None = tuple(int(s) for s in fs) if fs else None
        self.variables_metadata = read_variables_metadata(self.attrs, self.variables)
        self.units: dict[str, str] = {v: m["units"] for v, m in self.variables_metadata.items()}
        constant = self.attrs.get("constant_fields")  # anemoi-datasets lists them
        self.constant_fields: list[str] | None = (None if constant is None
                                                  else [str(v) for v in constant])
        # stores written by other tools keep the grid's native order
        self.cell_order: str = self.attrs.get("cell_order", "native")

    def _array(self, name: str, why: str) -> zarr.Array:
        node = self._group.get(name)
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{self.path} has no `{name}` array: {why}")
        return node

    def _decoded(self, name: str) -> np.ndarray:
        """All of array `name`; a corrupt chunk is a StoreError naming the store and array."""
        with decoding(self.path, name):
            return np.asarray(self._group[name][...])

    def _read_dates(self) -> np.ndarray:
        array = self._array("dates", "not an anemoi-datasets store")
        values = self._decoded("dates")
        if values.dtype.kind == "M":
            return values.astype("datetime64[s]")
        units = str(array.attrs.get("units", ""))
        if values.dtype.kind in "iu" and units.startswith("seconds since 1970-01-01"):
            return values.astype("int64").astype("datetime64[s]")
        raise StoreError(f"{self.path}: `dates` has dtype {values.dtype}; expected datetime64[s]")

    def __reduce__(self):
        # reopen by path in another process (e.g. a DataLoader worker) instead of pickling zarr
        if self._reopen:
            return open_store, (self.path, self._key)
        raise TypeError(f"a Store opened from {self.path} cannot be pickled; open it by path")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(time, variable, ensemble, cell)."""
        return tuple(int(s) for s in self._data.shape)

    @cached_property
    def latitudes(self) -> np.ndarray:
        return self._decoded("latitudes").astype(np.float64, copy=False)

    @cached_property
    def longitudes(self) -> np.ndarray:
        return self._decoded("longitudes").astype(np.float64, copy=False)

    def coordinates_at(self, cells: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latitudes, longitudes) float64 of `cells` (a slice or an index array); see
        `group_coordinates`. Coordinates already read in full (or needed in full: an index
        array) come from the cached arrays."""
        if isinstance(cells, slice) and "latitudes" not in self.__dict__:
            with decoding(self.path, "latitudes/longitudes"):
                return group_coordinates(self._group, cells)
        return self.latitudes[cells], self.longitudes[cells]

    @cached_property
    def native_index(self) -> np.ndarray | None:
        """(cell,) int64 position of each cell in the native order; None if not stored."""
        if "native_index" not in self._group:
            return None
        return self._decoded("native_index").astype(np.int64, copy=False)

    @cached_property
    def statistics(self) -> _Statistics:
        """Per-variable (variable,) arrays stored under the names in ``STATISTICS``.

        Holds only what the store has (``.get`` answers None for the rest); indexing a name
        the store lacks raises a StoreError saying so.
        """
        out = _Statistics(self.path)
        for name in STATISTICS:
            if name in self._group:
                values = self._decoded(name)
                if values.shape != (len(self.variables),):
                    raise StoreError(f"{self.path}: `{name}` has shape {values.shape}, "
                                     f"expected ({len(self.variables)},)")
                out[name] = values
        return out

    def variable_index(self, names: Sequence[str]) -> list[int]:
        """Positions of `names` on the variable axis."""
        index = {v: i for i, v in enumerate(self.variables)}
        missing = [n for n in names if n not in index]
        if missing:
            raise StoreError(f"{self.path} has no variables {missing}; available: {self.variables}")
        return [index[n] for n in names]

    def time_index(self, dates) -> np.ndarray:
        """Positions of `dates` (datetime64 or ISO strings) on the time axis, (n,) int64."""
        dates = as_dates(dates, "dates")
        pos = np.searchsorted(self.dates, dates)  # anemoi dates are sorted
        found = (pos < len(self.dates))
        found &= self.dates[np.minimum(pos, len(self.dates) - 1)] == dates
        if not found.all():
            raise StoreError(
                f"{self.path} has no dates {list_dates(dates[~found])}; it covers "
                f"{iso(self.dates[0])} to {iso(self.dates[-1])} every {self.frequency}"
            )
        return pos.astype(np.int64)

    def read(
        self,
        time: int | slice | np.ndarray,
        variables: Sequence[str] | None = None,
        cells: slice | np.ndarray | None = None,
        ensemble: int | slice | None = None,
    ) -> np.ndarray:
        """(time, variable, ensemble, cell) float32; integer keys keep their axis (length 1).

        Every axis is indexed orthogonally, so only the chunks holding the selection are
        fetched: a contiguous `cells` slice touches the chunks overlapping it, an index array
        the chunks containing its cells.
        """
        var = slice(None) if variables is None else np.asarray(self.variable_index(variables))
        key = (
            axis_key(time, self.shape[0], "time"),
            var,
            axis_key(ensemble, self.n_ensemble, "ensemble"),
            axis_key(cells, self.n_cells, "cell"),
        )
        with decoding(self.path, "data"):
            return np.asarray(self._data.oindex[key], dtype=np.float32)

    def __repr__(self) -> str:
        return (f"Store({self.path!r}, shape={self.shape}, variables={self.variables}, "
                f"dates={iso(self.dates[0])}..{iso(self.dates[-1])}/{self.frequency}, "
                f"cell_order={self.cell_order})")


class _Statistics(dict):
    """A dict of statistics whose missing entries raise a StoreError naming the fix."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def __missing__(self, name: str):
        raise StoreError(f"{self.path} has no `{name}` statistics array; "
                         "recompute them with RunningStats")
