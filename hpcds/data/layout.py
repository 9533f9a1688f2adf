"""The anemoi-datasets layout as hpcds writes it: root attributes, per-variable metadata,
coordinate arrays. Shared by the data stores (`hpcds.data.store`) and the ensemble output
(`hpcds.ensemble.output`), and read back from stores that anemoi-datasets itself wrote.

anemoi-datasets keeps per-variable metadata in the root attribute `variables_metadata`
({name: {"units": "K", "mars": {...}, "constant_in_time": true, ...}}) and lists the
time-constant variables in `constant_fields`; it does not read `units`, which hpcds stores
carry as well, for hpcds readers of stores written before `variables_metadata`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from hpcds.atomic import remove_path, temp_sibling, writing
from hpcds.data.chunks import wait_for_pending_io
from hpcds.data.dates import frequency_string, iso
from hpcds.errors import StoreError
from hpcds.grids.geometry import Grid

DIMS = ("time", "variable", "ensemble", "cell")
CF_KEYS = ("units", "standard_name", "long_name")  # what hpcds takes from variables_metadata
_COORD_CHUNK = 1 << 22  # (cell,) arrays: few chunks even at O2560, each small enough to fetch


@contextlib.contextmanager
def new_group(path: str | os.PathLike):
    """A new zarr v2 group under a temporary sibling name of `path`: yields (tmp, group).
    Write errors name `path` (`writing`); on any error inside, the temporary store is removed
    once zarr's chunk writes still in flight have ended (they would re-create parts of it).
    Publishing `tmp` at `path` is the caller's (now, or later by a writer object)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        try:
            yield tmp, zarr.open_group(tmp, mode="w-", zarr_format=2)
        except BaseException:
            wait_for_pending_io()
            remove_path(tmp)
            raise


def create_data_array(group, shape: tuple[int, int, int, int], chunk_cells: int):
    """The `data` array (time, variable, ensemble, cell) float32: one chunk per (date,
    member) with every variable and up to `chunk_cells` cells; unwritten values read NaN."""
    n_vars, n_cells = shape[1], shape[3]
    data = group.create_array("data", shape=shape,
                              chunks=(1, n_vars, 1, min(int(chunk_cells), n_cells)),
                              dtype="float32", fill_value=np.nan)
    data.attrs["_ARRAY_DIMENSIONS"] = list(DIMS)
    return data


def add_array(group, name, values, dims, chunks=None):
    """A fully written auxiliary array with its xarray dimension names."""
    values = np.asarray(values)
    # no fill value: zarr's default (0 / False) would make xarray mask real zeros, e.g. the
    # equator in `latitudes` or native_index 0, and turn ints and bools into floats
    array = group.create_array(name, shape=values.shape, dtype=values.dtype,
                               chunks=chunks or values.shape, fill_value=None)
    array[...] = values
    array.attrs["_ARRAY_DIMENSIONS"] = list(dims)
    return array


def anemoi_root_attrs(grid: Grid, variables: list[str], step: np.timedelta64,
                      dates: np.ndarray, missing: np.ndarray,
                      metadata: dict[str, dict[str, str]], resolution: str | None = None
                      ) -> dict:
    """The root attributes of the anemoi-datasets layout for cells in the grid's SFC order.

    metadata: {variable: {"units": …, and optionally "standard_name", "long_name"}}, kept as
    anemoi-datasets keeps it (`variables_metadata`) and, for older hpcds readers, its units
    again as `units` {variable: units}."""
    if resolution is None:  # "O320" → "O320", "0.25/0.25" → "0.25", "alps@0.125" → "0.125"
        resolution = grid.name.split("@")[-1].split("/")[0]
    return {
        "variables": list(variables),
        "name_to_index": {v: i for i, v in enumerate(variables)},
        "frequency": frequency_string(step),
        "start_date": iso(dates[0]),
        "end_date": iso(dates[-1]),
        "missing_dates": [iso(d) for d in np.unique(missing)],
        "resolution": resolution,
        "field_shape": [int(s) for s in grid.field_shape],
        "flatten_grid": True,
        "ensemble_dimension": 2,
        "units": {v: str(metadata.get(v, {}).get("units", "")) for v in variables},
        "variables_metadata": {v: dict(metadata.get(v, {})) for v in variables},
        "cell_order": "sfc",  # cells follow the grid's space-filling curve; see native_index
        "grid": grid.name,
    }


def write_grid_coordinates(group, grid: Grid) -> None:
    """`latitudes`, `longitudes` (float64) and `native_index` (int64) of the grid's SFC-ordered
    cells, each (cell,) with its xarray dimension name."""
    n_cells = grid.size
    coord_chunks = (min(n_cells, _COORD_CHUNK),)
    for name, values in (
        ("latitudes", np.asarray(grid.latitudes, dtype=np.float64)),
        ("longitudes", np.asarray(grid.longitudes, dtype=np.float64)),
        ("native_index", np.asarray(grid.native_index, dtype=np.int64)),
    ):
        if values.shape != (n_cells,):
            raise StoreError(f"grid {grid.name}: {name} has shape {values.shape}, "
                             f"expected ({n_cells},)")
        add_array(group, name, values, ["cell"], chunks=coord_chunks)


def group_coordinates(group, cells: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latitudes, longitudes) float64 of `cells` of a store's zarr group. A slice reads only
    those cells: at O2560 the whole arrays are 0.4 GB per store, and a model-parallel rank
    needs only its own range."""
    if isinstance(cells, slice):
        return tuple(np.asarray(group[name][cells], dtype=np.float64)
                     for name in ("latitudes", "longitudes"))
    return tuple(np.asarray(group[name][...], dtype=np.float64)[cells]
                 for name in ("latitudes", "longitudes"))


def read_variables_metadata(attrs: dict, variables: Sequence[str]) -> dict[str, dict[str, str]]:
    """{variable: {"units", and "standard_name"/"long_name" where known}} from a store's root
    attributes: anemoi-datasets keeps per-variable metadata in `variables_metadata` ({name:
    {"units": …, "mars": {…}, …}}: only the CF keys are taken); stores without it (older
    hpcds ones) have only `units` {name: units}. Units are "" where neither says."""
    nested = attrs.get("variables_metadata") or {}
    flat = attrs.get("units") or {}
    out = {}
    for name in variables:
        entry = nested.get(name) if isinstance(nested.get(name), dict) else {}
        meta = {k: str(entry[k]) for k in CF_KEYS if entry.get(k)}
        meta.setdefault("units", str(flat.get(name) or ""))
        out[name] = meta
    return out
