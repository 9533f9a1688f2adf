"""Reading stores' chunks: the orthogonal selection of one axis (`axis_key`), and a chunk that
does not decode as a one-line `StoreError` (`decoding`).

A chunk can be damaged by bit rot, a copy cut short or a crashed writer of another tool; zarr
then raises whatever its codec raises for bytes that are not a chunk: numcodecs' blosc
``RuntimeError: error during blosc decompression``, ``zlib.error``, or a ``ValueError`` when the
decoded bytes do not fill the chunk. hpcds's own writers publish stores atomically and cannot
leave one, so the fix is to re-create the store or restore it from a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import zlib

import numpy as np

from hpcds.errors import StoreError

DECODE_ERRORS = (RuntimeError, ValueError, zlib.error)
RECREATE = ("re-create it (the benchmark: `hpcds data benchmark --overwrite`) or restore it "
            "from a copy")


@contextlib.contextmanager
def decoding(path: str | os.PathLike, array: str, fix: str = RECREATE):
    """Report a chunk of `array` of the store at `path` that fails to decode as a StoreError
    naming both, with `fix`."""
    try:
        yield
    except DECODE_ERRORS as exc:
        wait_for_pending_io()
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise StoreError(f"{path}: a chunk of `{array}` is corrupt ({detail}); {fix}") from None


def wait_for_pending_io(timeout: float = 10.0) -> None:
    """Wait until zarr's I/O loop has no task left. zarr reads and writes a selection's chunks
    as tasks on its own event loop (a daemon thread); when one chunk fails the others keep
    running: a process that exits before they end prints "Task was destroyed but it is
    pending!" after the one-line error, and a writer that deletes its temporary store at once
    races the writes still in flight, which re-create parts of it."""
    try:
        from zarr.core.sync import loop as zarr_loop  # zarr 3's I/O loop, [None] until used
    except ImportError:
        return
    io_loop = zarr_loop[0]
    if io_loop is None or not io_loop.is_running():
        return

    async def rest():
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(rest(), io_loop).result(timeout + 1)
    except Exception:  # noqa: BLE001 - only a stray warning is at stake
        pass


def axis_key(key, size: int, axis: str):
    """A zarr orthogonal-indexing key for one axis; an int becomes a length-1 slice."""
    if key is None:
        return slice(None)
    if isinstance(key, slice):
        return key
    if np.ndim(key) == 0:
        i = operator.index(key)
        if not -size <= i < size:
            raise IndexError(f"{axis} index {i} is out of range for {size} {axis} entries")
        i %= size
        return slice(i, i + 1)
    return np.asarray(key)
