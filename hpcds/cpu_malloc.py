"""Keep freed heap memory for reuse instead of handing it back to the kernel (glibc malloc).

Why: a training or sampling step on CPU allocates the same large activations every step —
at the small peer shape (16,384 HR nodes, 128 channels) (N, 4C) float32 tensors of 32 MiB
and (N, C) ones of 8 MiB. glibc serves requests above its mmap threshold (dynamic, at most
32 MiB) with a fresh mmap and unmaps them on free, so each step touches those pages anew:
one page fault per 4 KiB plus the kernel zeroing the page, i.e. ~8,000 faults per 32 MiB
tensor. With mmap off for malloc (M_MMAP_MAX = 0) and a trim threshold above a step's
working set, freed blocks go back to malloc's own free lists and the next step reuses
them, already mapped. Measured: 14 % off a small-shape forward + backward and 13 % off an
inference forward at 1 thread (interleaved in one process, perf/results/peer-anemoi-20261204.md).

Cost: memory freed below `trim_threshold` at the heap's top stays with the process (RSS
does not drop after a step; the peak is the same), and the heap may fragment a little more.
Process-wide and permanent (every later allocation), so it is set once, by the entry
points (`hpcds` CLI) — not by library code. `HPCDS_KEEP_FREED_MEMORY=0` turns it off.
A no-op off glibc (macOS, musl): returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_applied = False


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, trim_threshold) in this process;
    True when applied (now or before), False where glibc is absent or it is turned off."""
    global _applied
    if _applied:
        return True
    if os.environ.get("HPCDS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the threshold is an int (at most 2 GiB - 1)
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD,
                                                 min(int(trim_threshold), 2**31 - 1)) == 1
    if ok:
        _applied = True
        log.debug("glibc malloc: mmap off, trim threshold %d bytes", trim_threshold)
    return ok
