"""The ensemble output store: an anemoi-layout zarr that is created atomically and then filled
in place, one (date, member batch, cell range) region at a time, resumably.

Layout (zarr_format 2, like every hpcds store; see `hpcds.data.store`):

    data         (time, variable, ensemble, cell) float32, chunks (1, n_var, 1, chunk_cells)
                 — the issue writes "(member, time, variable, cell)"; anemoi-datasets puts the
                 ensemble (member) as the third axis and so do we, so `hpcds.data.store.open_store`
                 and anemoi tooling read it like any other store. Unwritten regions read NaN.
    done         (time, ensemble) uint8, chunks (1, 1): 1 once every cell of (date, member) is
                 written. One chunk per flag, so two writers never share a chunk.
    dates        (time,) datetime64[s]        latitudes, longitudes (cell,) float64
    native_index (cell,) int64                lr_member (ensemble,) int64: the LR member each
                                              output member was downscaled from
    variable     (variable,) str: the names again, as xarray's dimension coordinate

Attributes: the anemoi root attributes (variables, name_to_index, frequency, start_date,
end_date, missing_dates, resolution, field_shape, flatten_grid, ensemble_dimension, units,
cell_order "sfc", grid), CF-style per-variable metadata `variables_metadata` ({name: {units,
standard_name, long_name}}: the HR store's, else hpcds's table, see `variables_metadata`),
`hpcds_format` "hpcds-ensemble" (what `EnsembleStore` checks; stores written before it have
`format` instead, which anemoi-datasets reads as its own layout name and refuses, so it is no
longer written), `Conventions`, `provenance` (hpcds version, creation
time, checkpoint path and SHA-256, solver/schedule/steps/seed, …), `hpcds_config` (the resolved
config YAML) and `identity`: what a rerun must agree on to resume (see `check_identity`).
`data` lists `dates latitudes longitudes lr_member` in its CF `coordinates` attribute, so
`xarray.open_zarr` makes them coordinates.

No statistics arrays (mean, stdev, …): they describe training data, and computing them would
mean one more pass over the whole ensemble; evaluation computes what it needs.

Atomicity and resumption: the metadata and coordinates are built under a temporary sibling name
and renamed into place (`hpcds.atomic.publish_dir`); an exception before the rename leaves
nothing. Afterwards regions are written in place: a member's data first, then its `done`
flag, so a flag is only ever set over complete data. A rerun opens the store, checks that it
matches (`check_identity`) and skips the (date, member) pairs already flagged. Metadata is
consolidated at creation and never changes afterwards (only chunks of `data` and `done` are
written), so the consolidated view stays valid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from hpcds.atomic import exists_error, publish_dir, writing
from hpcds.data.chunks import decoding
from hpcds.data.dates import as_dates, frequency_string, iso, list_dates, parse_frequency
from hpcds.data.layout import (CF_KEYS, add_array, anemoi_root_attrs, create_data_array,
                               group_coordinates, new_group, write_grid_coordinates)
from hpcds.errors import StoreError
from hpcds.grids.geometry import Grid
from hpcds.observe import trace_range

FORMAT = "hpcds-ensemble"
FORMAT_VERSION = 1
# the root attribute holding FORMAT; anemoi-datasets' open_dataset takes `layout`, else
# `format`, as its layout name (gridded, tabular, …) and refuses any other value, so ours has a
# name of its own. LEGACY_MARKER: where stores written before kept it (still read)
MARKER, LEGACY_MARKER = "hpcds_format", "format"
# what to do about an existing store that cannot be resumed (the default: sampling's view)
SAMPLING_FIX = "pick another sampling.output or pass --overwrite"
RESAMPLE = "sample it again (`hpcds sample --overwrite`) or restore it from a copy"

# CF metadata of the variables the benchmark writes (ECMWF short names → CF standard names,
# units); a store's own metadata takes precedence
CF_VARIABLES: dict[str, dict[str, str]] = {
    "2t": {"standard_name": "air_temperature", "long_name": "2 metre temperature",
           "units": "K"},
    "10u": {"standard_name": "eastward_wind", "long_name": "10 metre U wind component",
            "units": "m s-1"},
    "10v": {"standard_name": "northward_wind", "long_name": "10 metre V wind component",
            "units": "m s-1"},
    "msl": {"standard_name": "air_pressure_at_mean_sea_level", "long_name": "Mean sea level "
            "pressure", "units": "Pa"},
    "tp": {"standard_name": "precipitation_amount", "long_name": "Total precipitation",
           "units": "m"},
}


def variables_metadata(variables: Sequence[str],
                       source: Mapping[str, Mapping[str, str]] | None = None
                       ) -> dict[str, dict[str, str]]:
    """{name: {units, standard_name?, long_name?}}: each key from `source` (the HR store's
    `Store.variables_metadata`, which reads anemoi-datasets' `variables_metadata`) where it is
    set, else from `CF_VARIABLES`; units "" where neither knows them."""
    source = source or {}
    out = {}
    for name in variables:
        meta = dict(CF_VARIABLES.get(name, {}))
        meta.update({k: str(v) for k, v in (source.get(name) or {}).items()
                     if k in CF_KEYS and v})
        meta.setdefault("units", "")
        out[name] = meta
    return out


def regular_axis(dates: np.ndarray, step: np.timedelta64) -> tuple[np.ndarray, np.ndarray]:
    """The regular time axis from the first to the last of `dates` at `step`, and the dates on
    it that are not in `dates` (declared missing: never written, NaN, no done flag needed)."""
    dates = np.unique(as_dates(dates, "dates"))
    if len(dates) == 0:
        raise StoreError("no dates to sample; check data.start_date/end_date")
    if np.any((dates - dates[0]) % step != np.timedelta64(0, "s")):
        raise StoreError(f"the dates to sample are not on a {frequency_string(step)} grid "
                         f"from {iso(dates[0])}; the stores' frequency must divide them")
    axis = np.arange(dates[0], dates[-1] + step, step).astype("datetime64[s]")
    axis = axis[axis <= dates[-1]]
    return axis, np.setdiff1d(axis, dates)


@dataclass(frozen=True)
class EnsembleLayout:
    """What decides the shape and meaning of an ensemble store (all plain data).

    dates: the dates to sample (the time axis is their regular hull, gaps declared missing);
    lr_members K, members M per LR member: the ensemble axis has K·M members, output member
    k·M + m is HR member m of LR member k."""

    grid: Grid
    variables: tuple[str, ...]
    dates: np.ndarray
    frequency: str
    lr_members: int
    members: int
    chunk_cells: int = 65536

    @property
    def n_members(self) -> int:
        return self.lr_members * self.members


def _identity_json(identity: Mapping) -> dict:
    try:
        return json.loads(json.dumps(dict(identity), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StoreError(f"identity must be JSON-serialisable ({e})") from None


def create_ensemble_store(path: str | os.PathLike, layout: EnsembleLayout, *,
                          metadata: Mapping[str, Mapping[str, str]] | None = None,
                          identity: Mapping | None = None, provenance: Mapping | None = None,
                          config_yaml: str | None = None, overwrite: bool = False
                          ) -> "EnsembleStore":
    """Create the (empty) store at `path` atomically and return it opened for writing.

    metadata: per-variable {units, standard_name, long_name}, e.g. the HR store's
    `variables_metadata` (see `variables_metadata`);
    identity: JSON data a rerun must match to resume (checkpoint hash, solver settings, …);
    provenance: JSON data recorded for readers. An existing `path` is an error unless
    `overwrite` (then it is replaced only once the new metadata is complete).
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise exists_error(path)
    variables = [str(v) for v in layout.variables]
    if not variables or len(set(variables)) != len(variables):
        raise StoreError(f"variables {variables} must be a non-empty list of distinct names")
    if layout.lr_members < 1 or layout.members < 1 or layout.chunk_cells < 1:
        raise StoreError(f"lr_members ({layout.lr_members}), members ({layout.members}) and "
                         f"chunk_cells ({layout.chunk_cells}) must be >= 1")
    step = parse_frequency(layout.frequency)
    axis, missing = regular_axis(layout.dates, step)
    grid = layout.grid
    n_cells, n_members = grid.size, layout.n_members
    attrs = {
        **anemoi_root_attrs(grid, variables, step, axis, missing,
                            variables_metadata(variables, metadata)),
        "Conventions": "CF-1.10",
        "title": "hpcds downscaled ensemble",
        MARKER: FORMAT,
        f"{MARKER}_version": FORMAT_VERSION,
        "lr_members": int(layout.lr_members),
        "members_per_lr_member": int(layout.members),
        "member_order": "output member k*members_per_lr_member + m is HR member m of LR "
                        "member k",
        "identity": _identity_json(identity or {}),
        "provenance": _identity_json(provenance or {}),
        "hpcds_config": config_yaml or "",
    }
    with new_group(path) as (tmp, group):
        data = create_data_array(group, (len(axis), len(variables), n_members, n_cells),
                                 layout.chunk_cells)
        data.attrs.update({
            "coordinates": "dates latitudes longitudes lr_member",
            "long_name": "downscaled high-resolution ensemble",
            "comment": "per-variable units and CF names: root attribute variables_metadata",
        })
        done = group.create_array("done", shape=(len(axis), n_members), chunks=(1, 1),
                                  dtype="uint8", fill_value=None)  # missing chunks read 0
        done.attrs.update({
            "_ARRAY_DIMENSIONS": ["time", "ensemble"],
            "long_name": "1 once every cell of (date, member) is written",
        })
        add_array(group, "dates", axis, ["time"])
        write_grid_coordinates(group, grid)
        group["latitudes"].attrs.update({"units": "degrees_north",
                                         "standard_name": "latitude"})
        group["longitudes"].attrs.update({"units": "degrees_east",
                                          "standard_name": "longitude"})
        lr_member = np.repeat(np.arange(layout.lr_members, dtype=np.int64), layout.members)
        add_array(group, "lr_member", lr_member, ["ensemble"])
        names = group.create_array("variable", shape=(len(variables),), dtype=str,
                                   chunks=(len(variables),), fill_value=None)
        names[...] = np.array(variables)
        names.attrs["_ARRAY_DIMENSIONS"] = ["variable"]
        group.attrs.update(attrs)
        zarr.consolidate_metadata(tmp, zarr_format=2)
        publish_dir(tmp, path, overwrite=overwrite)
    return EnsembleStore.open(path, mode="r+")


class EnsembleStore:
    """An ensemble store opened for reading (mode "r") or filling (mode "r+").

    dates (time,) datetime64[s] (the full axis), missing_dates, variables, n_members,
    lr_members, members (per LR member), n_cells, attrs, identity. `fix`: what the errors
    about a store that is not one (or not a consistent one) tell the user to do."""

    def __init__(self, group: zarr.Group, path: Path, mode: str, fix: str = SAMPLING_FIX):
        self.path, self.mode = path, mode
        self._group = group
        self.attrs = dict(group.attrs)
        if self.attrs.get(MARKER, self.attrs.get(LEGACY_MARKER)) != FORMAT:
            raise StoreError(f"{path} is not an hpcds ensemble store (no {MARKER}={FORMAT!r} "
                             f"attribute); {fix}")
        self._data, self._done = group["data"], group["done"]
        self.variables = [str(v) for v in self.attrs["variables"]]
        n_time, _, self.n_members, self.n_cells = (int(s) for s in self._data.shape)
        with decoding(path, "dates", RESAMPLE):
            self.dates = np.asarray(group["dates"][...]).astype("datetime64[s]")
        self.missing_dates = as_dates(self.attrs.get("missing_dates", []), "missing_dates")
        self.lr_members = int(self.attrs["lr_members"])
        self.members = int(self.attrs["members_per_lr_member"])
        self.identity = dict(self.attrs.get("identity") or {})
        self.cell_order: str = self.attrs.get("cell_order", "sfc")
        if len(self.dates) != n_time or self.lr_members * self.members != self.n_members:
            raise StoreError(f"{path} is inconsistent (dates/members do not match `data`); "
                             f"{fix}")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r",
             fix: str = SAMPLING_FIX) -> "EnsembleStore":
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no ensemble store at {path}; run `hpcds sample`")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=2)
        except (zarr.errors.BaseZarrError, OSError, ValueError) as e:
            raise StoreError(f"{path} is not a zarr group ({type(e).__name__}); {fix}"
                             ) from None
        return cls(group, path, mode, fix)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def latitudes(self) -> np.ndarray:
        """(cell,) float64 degrees north, read on first use."""
        with decoding(self.path, "latitudes", RESAMPLE):
            return np.asarray(self._group["latitudes"][...], dtype=np.float64)

    @property
    def longitudes(self) -> np.ndarray:
        """(cell,) float64 degrees east, read on first use."""
        with decoding(self.path, "longitudes", RESAMPLE):
            return np.asarray(self._group["longitudes"][...], dtype=np.float64)

    def coordinates_at(self, cells: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latitudes, longitudes) float64 of `cells`: a slice reads only those."""
        with decoding(self.path, "latitudes/longitudes", RESAMPLE):
            return group_coordinates(self._group, cells)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self._data.shape)

    @property
    def chunk_cells(self) -> int:
        """Cells per chunk of `data`: writers that share a member must split the cells at
        multiples of it."""
        return int(self._data.chunks[3])

    def time_index(self, date) -> int:
        date = np.datetime64(date, "s")
        i = int(np.searchsorted(self.dates, date))
        if i >= len(self.dates) or self.dates[i] != date:
            raise StoreError(f"{self.path} has no date {iso(date)}")
        return i

    def done(self) -> np.ndarray:
        """(time, member) bool: the (date, member) pairs complete on disk."""
        with decoding(self.path, "done", RESAMPLE):
            return np.asarray(self._done[...]).astype(bool)

    def sampled(self) -> np.ndarray:
        """(time,) bool: dates on the axis that are to be sampled (not declared missing)."""
        return ~np.isin(self.dates, self.missing_dates)

    def complete(self) -> bool:
        return bool(self.done()[self.sampled()].all())

    # ------------------------------------------------------------------ writing
    def write(self, t: int, members: Sequence[int] | np.ndarray, values: np.ndarray,
              cells: slice | None = None) -> None:
        """Write `values` (member, variable, cell) for date index `t` and the given output
        `members` over `cells` (default: all; a contiguous range, chunk-aligned for writers
        that share a member). Does not set the done flags: call `mark_done` once every cell
        range of those members is written."""
        if self.mode == "r":
            raise StoreError(f"{self.path} is open read-only")
        members = np.atleast_1d(np.asarray(members, dtype=np.int64))
        cells = slice(0, self.n_cells) if cells is None else cells
        n = len(range(*cells.indices(self.n_cells)))
        values = np.asarray(values)
        expected = (len(members), len(self.variables), n)
        if values.shape != expected:
            raise StoreError(f"values have shape {values.shape}, expected {expected} "
                             "(member, variable, cell)")
        if self.dates[t] in self.missing_dates:
            raise StoreError(f"date {iso(self.dates[t])} is declared missing in {self.path}")
        with trace_range("write"), writing(self.path):
            block = np.ascontiguousarray(values.transpose(1, 0, 2), dtype=np.float32)
            runs = np.split(np.arange(len(members)), np.flatnonzero(np.diff(members) != 1) + 1)
            for run in runs:  # contiguous member runs: one orthogonal write each
                m0 = int(members[run[0]])
                self._data[t, :, m0:m0 + len(run), cells] = block[:, run[0]:run[-1] + 1]

    def mark_done(self, t: int, members: Sequence[int] | np.ndarray) -> None:
        with writing(self.path):
            for m in np.atleast_1d(np.asarray(members, dtype=np.int64)):
                self._done[t, int(m)] = 1

    # ------------------------------------------------------------------ reading
    def read(self, t: int | slice | None = None, members=None) -> np.ndarray:
        """(time, variable, member, cell) float32 (an int `t` keeps its axis)."""
        t = slice(None) if t is None else (slice(t, t + 1) if np.ndim(t) == 0 else t)
        m = slice(None) if members is None else members
        with decoding(self.path, "data", RESAMPLE):
            return np.asarray(self._data.oindex[t, :, m, :], dtype=np.float32)

    def __repr__(self) -> str:
        return (f"EnsembleStore({str(self.path)!r}, shape={self.shape}, "
                f"members={self.lr_members}x{self.members}, done={int(self.done().sum())})")


def check_identity(store: EnsembleStore, layout: EnsembleLayout, identity: Mapping) -> None:
    """Raise a `StoreError` naming the first difference between an existing store and what a
    rerun would write: shape, variables, grid, dates, members, then each identity key."""
    axis, missing = regular_axis(layout.dates, parse_frequency(layout.frequency))
    fix = f"pick another sampling.output or pass --overwrite to replace {store.path}"
    expected = {
        "variables": list(layout.variables),
        "grid": layout.grid.name,
        "cells": layout.grid.size,
        "dates": f"{iso(axis[0])} .. {iso(axis[-1])} ({len(axis)} dates)",
        "missing dates": list_dates(missing) if len(missing) else "none",
        "LR members": layout.lr_members,
        "members per LR member": layout.members,
    }
    found = {
        "variables": store.variables,
        "grid": store.attrs.get("grid"),
        "cells": store.n_cells,
        "dates": f"{iso(store.dates[0])} .. {iso(store.dates[-1])} ({len(store.dates)} dates)",
        "missing dates": (list_dates(store.missing_dates) if len(store.missing_dates)
                          else "none"),
        "LR members": store.lr_members,
        "members per LR member": store.members,
    }
    for key in expected:
        if expected[key] != found[key]:
            raise StoreError(f"{store.path} was written for another run: {key} "
                             f"{found[key]} there, {expected[key]} now; {fix}")
    if len(axis) == len(store.dates) and not np.array_equal(axis, store.dates):
        raise StoreError(f"{store.path} was written for other dates; {fix}")
    want = _identity_json(identity)
    for key in sorted(set(want) | set(store.identity)):
        if want.get(key) != store.identity.get(key):
            raise StoreError(f"{store.path} was written for another run: {key} "
                             f"{store.identity.get(key)!r} there, {want.get(key)!r} now; {fix}")


def replacement_path(path: str | os.PathLike) -> Path:
    """Where `hpcds sample --overwrite` builds the store that replaces `path` once complete:
    a fixed name, the same on every rank."""
    path = Path(path)
    return path.with_name(path.name + ".replacing")


def open_or_create(path: str | os.PathLike, layout: EnsembleLayout, *,
                   identity: Mapping | None = None, overwrite: bool = False,
                   **create_kwargs) -> tuple[EnsembleStore, bool]:
    """(store, created): a fresh store, or the existing one at `path` after `check_identity`
    (resumption). With `overwrite` an existing store is replaced by a fresh one."""
    path = Path(path)
    identity = dict(identity or {})
    if (path.exists() or path.is_symlink()) and not overwrite:
        store = EnsembleStore.open(path, mode="r+")
        check_identity(store, layout, identity)
        return store, False
    return create_ensemble_store(path, layout, identity=identity, overwrite=overwrite,
                                 **create_kwargs), True
