"""Large grids on disk, memory-mapped: build O2560 once, let every rank share its pages.

`make_grid` of O2560 (26,306,560 cells) takes ~22 s and peaks at ~4.8 GiB (the SFC sort's
temporaries); four ranks on one node doing that at once need ~19 GiB. `cached_grid` writes
the built grid's arrays as .npy files once, under `cache_dir`/grid-<key>/, and every later
call (any process) maps them read-only: no build, and the ranks of a node share one copy
of the 0.84 GiB of coordinates, weights and index through the page cache.

The key is a hash of the parsed grid spec (label, kind, N/steps, area, pole), a format
version and the source of the modules that compute grids (so a changed SFC or grid builder
never reads an old entry); the directory is written under a temporary name and renamed into place, so a
reader never sees a half-written entry (a concurrent second writer just discards its copy).
Grids smaller than `DISK_CACHE_MIN_CELLS` are built in memory: faster than reading them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from hpcds.atomic import temp_sibling, writing
from hpcds.config.schema import GridConfig
from hpcds.grids.cache import stable_hash
from hpcds.grids.geometry import Grid
from hpcds.grids.spec import KINDS, GridSpec, grid_point_count, make_grid, parse_grid_config

log = logging.getLogger(__name__)

DISK_CACHE_MIN_CELLS = 1 << 21  # ~2.1 M cells (O640 and up)
_FORMAT = 1
_ARRAYS = ("latitudes", "longitudes", "area_weights", "native_index")


# the modules every grid is built with; each kind's own module comes from `spec.KINDS`
_BUILDERS = ("geometry", "regions", "sfc", "spec")


def _key(spec: GridSpec) -> str:
    area = None if spec.area is None else spec.area.spec()
    here = Path(__file__).parent
    modules = {*_BUILDERS, *(kind.module for kind in KINDS.values())}
    code = stable_hash({m: (here / f"{m}.py").read_text() for m in modules})
    return stable_hash({"format": _FORMAT, "kind": spec.kind, "label": spec.label,
                        "N": spec.N, "steps": spec.steps, "pole": spec.pole, "area": area,
                        "code": code})


def _load(path: Path, spec: GridSpec) -> Grid:
    meta = json.loads((path / "grid.json").read_text())
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    n = int(meta["size"])
    if any(a.shape != (n,) for a in arrays.values()):
        raise ValueError(f"grid cache entry {path} holds arrays of the wrong length")
    return Grid(name=meta["name"], field_shape=tuple(meta["field_shape"]),
                is_global=bool(meta["is_global"]), spec=spec, **arrays)


def _save(path: Path, grid: Grid) -> None:
    with writing(path):
        tmp = temp_sibling(path)
        tmp.mkdir(parents=True)
        try:
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(grid, name)))
            (tmp / "grid.json").write_text(json.dumps(
                {"name": grid.name, "size": grid.size, "field_shape": list(grid.field_shape),
                 "is_global": grid.is_global}))
            try:
                os.rename(tmp, path)
            except OSError:  # another process published it first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def cached_grid(cfg: GridConfig, cache_dir: str | os.PathLike | None) -> Grid:
    """`make_grid(cfg)`, through the on-disk cache for grids of at least
    DISK_CACHE_MIN_CELLS cells (memory-mapped, read-only arrays); cache_dir None: built."""
    if cache_dir is None or grid_point_count(cfg) < DISK_CACHE_MIN_CELLS:
        return make_grid(cfg)
    spec = parse_grid_config(cfg)  # the key, and the Grid's spec (not stored in the entry)
    path = Path(cache_dir) / f"grid-{_key(spec)[:24]}"
    if path.is_dir():
        try:
            return _load(path, spec)
        except (OSError, ValueError, KeyError) as err:
            log.warning("grid cache entry %s is unreadable (%s); rebuilding it", path, err)
            shutil.rmtree(path, ignore_errors=True)
    grid = make_grid(cfg)
    _save(path, grid)
    return _load(path, spec)
