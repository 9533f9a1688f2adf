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
import struct
import weakref
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from hpcds.atomic import atomic_open, temp_sibling, writing
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


def _entry(kind: str, payload: dict, cache_dir: str | os.PathLike, suffix: str
           ) -> tuple[str, Path]:
    """(key, path) of the entry of `kind` identified by `payload`: key = stable hash of
    {"kind": kind, **payload}, path = cache_dir/<kind>-<key[:24]><suffix>."""
    key = stable_hash({"kind": kind, **payload})
    return key, Path(cache_dir) / f"{kind}-{key[:24]}{suffix}"


def _check_kind(kind: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", kind):
        raise ValueError(f"cache kind {kind!r} must be a plain file-name word")


def _stored_member_memmap(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The .npy member `info` of the uncompressed .npz `path` as a copy-on-write memory map
    (None if it is compressed or holds objects): np.savez stores members as plain .npy
    files, so the array's bytes lie at a fixed offset of the archive."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)  # the local file header: name and extra-field lengths at 26, 28
        if head[:4] != b"PK\x03\x04":
            raise ValueError(f"{info.filename}: no local file header")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def _load(path: Path, key: str, mmap_min_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of entry `path`; members of at least `mmap_min_bytes` are memory-mapped
    (copy-on-write: file pages, shared and evictable, until written to)."""
    arrays = {}
    with zipfile.ZipFile(path) as archive, np.load(path, allow_pickle=False) as data:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if mmap_min_bytes is not None and info.file_size >= mmap_min_bytes:
                mapped = _stored_member_memmap(path, info)
                if mapped is not None:
                    arrays[name] = mapped
                    continue
            arrays[name] = data[name]
    if str(arrays.pop(_KEY_FIELD, "")) != key:
        raise ValueError("cache key mismatch")
    return arrays


def _save(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays, **{_KEY_FIELD: np.array(key)})


def cached_arrays(kind: str, params: dict, build_fn: Callable[[], dict[str, np.ndarray]],
                  cache_dir: str | os.PathLike | None,
                  check: Callable[[dict[str, np.ndarray]], None] | None = None,
                  mmap_min_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Arrays from `cache_dir`/<kind>-<hash>.npz, or `build_fn()` (then stored there).

    check: raises (ValueError, KeyError) if loaded arrays are not a valid entry; such an
    entry, like an unreadable file, is rebuilt with a logged warning. cache_dir None: no cache.
    mmap_min_bytes: arrays of at least this size read from the cache are copy-on-write
    memory maps of the file, not copies in memory (an O2560 shard's graphs: ~3 GB).
    """
    _check_kind(kind)
    if cache_dir is None:
        return build_fn()
    key, path = _entry(kind, {"params": params}, cache_dir, ".npz")
    if path.exists():
        try:
            arrays = _load(path, key, mmap_min_bytes)
            if check is not None:
                check(arrays)
            log.debug("cache hit %s", path)
            return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("cache entry %s is unreadable (%s: %s); rebuilding it", path,
                        type(err).__name__, err)
    arrays = build_fn()
    _save(path, key, arrays)  # atomic_open creates the directory
    return arrays


def cached_npy(kind: str, params: dict, shape: tuple[int, ...], dtype,
               fill: Callable[[np.ndarray], None], cache_dir: str | os.PathLike) -> np.ndarray:
    """A large derived array as `cache_dir`/<kind>-<hash>.npy, memory-mapped copy-on-write.

    On a miss `fill(out)` writes every element of `out`, a memory map of a temporary file
    (so the array never needs to fit in memory), which then replaces the entry atomically.
    A file of another shape or dtype, or that cannot be read, is rebuilt."""
    _check_kind(kind)
    _, path = _entry(kind, {"params": params, "shape": list(shape),
                            "dtype": np.dtype(dtype).str}, cache_dir, ".npy")
    if path.exists():
        try:
            out = np.load(path, mmap_mode="c")
            if out.shape == tuple(shape) and out.dtype == np.dtype(dtype):
                return out
            log.warning("cache entry %s has shape %s %s, not %s %s; rebuilding it", path,
                        out.shape, out.dtype, tuple(shape), np.dtype(dtype))
        except (OSError, ValueError) as err:
            log.warning("cache entry %s is unreadable (%s: %s); rebuilding it", path,
                        type(err).__name__, err)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
            fill(out)
            out.flush()
            del out
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return np.load(path, mmap_mode="c")
