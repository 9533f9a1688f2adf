"""A disk cache of built arrays (graphs, interpolation matrices), keyed by what built them.

An entry is one ``.npz`` file named by a stable hash of the builder and its parameters
(grids enter through `grid_fingerprint`: name, size and a hash of the coordinates, so a
changed grid never hits an old entry). Entries are written to a temporary file in the same
directory and moved into place with ``os.replace``, so concurrent ranks building the same
entry never see half a file. A file that cannot be read back is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import weakref
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from hpcds.atomic import atomic_open
from hpcds.grids.geometry import Grid

log = logging.getLogger(__name__)

_KEY_FIELD = "__cache_key__"
_fingerprints: "weakref.WeakKeyDictionary[Grid, dict]" = weakref.WeakKeyDictionary()


def grid_fingerprint(grid: Grid) -> dict:
    """{"name", "size", "coords"}: coords is a hash of the SFC-ordered latitudes/longitudes
    (computed once per Grid object; ~1 s for 26M cells)."""
    if grid not in _fingerprints:
        digest = hashlib.sha256()
        for array in (grid.latitudes, grid.longitudes):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        _fingerprints[grid] = {"name": grid.name, "size": grid.size,
                               "coords": digest.hexdigest()[:32]}
    return dict(_fingerprints[grid])


def _jsonable(value):
    if isinstance(value, Grid):
        return grid_fingerprint(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cache parameter of type {type(value).__name__} is not hashable "
                    "into a cache key; pass numbers, strings, lists, dicts or Grids")


def stable_hash(params: dict) -> str:
    """Hex sha256 of `params` as canonical JSON (sorted keys); Grids hash by fingerprint."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def _load(path: Path, key: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if str(arrays.pop(_KEY_FIELD, "")) != key:
        raise ValueError("cache key mismatch")
    return arrays


def _save(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays, **{_KEY_FIELD: np.array(key)})


def cached_arrays(kind: str, params: dict, build_fn: Callable[[], dict[str, np.ndarray]],
                  cache_dir: str | os.PathLike | None,
                  check: Callable[[dict[str, np.ndarray]], None] | None = None
                  ) -> dict[str, np.ndarray]:
    """Arrays from `cache_dir`/<kind>-<hash>.npz, or `build_fn()` (then stored there).

    check: raises (ValueError, KeyError) if loaded arrays are not a valid entry; such an
    entry, like an unreadable file, is rebuilt with a logged warning. cache_dir None: no cache.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", kind):
        raise ValueError(f"cache kind {kind!r} must be a plain file-name word")
    if cache_dir is None:
        return build_fn()
    key = stable_hash({"kind": kind, "params": params})
    path = Path(cache_dir) / f"{kind}-{key[:24]}.npz"
    if path.exists():
        try:
            arrays = _load(path, key)
            if check is not None:
                check(arrays)
            log.debug("cache hit %s", path)
            return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("cache entry %s is unreadable (%s: %s); rebuilding it", path,
                        type(err).__name__, err)
    arrays = build_fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, key, arrays)
    return arrays
