"""The one space-filling curve (SFC) that orders every node set of hpcds.

Points are sent to the face of the circumscribed cube that their major axis points at, and
placed on a 2^20 × 2^20 lattice of equal-angle gnomonic coordinates on that face (cells of
about 1.5e-6 rad ≈ 10 m on the Earth, far below any grid spacing we use, so distinct grid
points get distinct keys). A Hilbert curve orders each face; the faces follow one another
+X, +Y, +Z, -X, -Y, -Z (each shares an edge with the next) and each face's curve is oriented
so that it starts at the cube corner where the previous face's curve ended. The whole curve
is therefore continuous on the sphere, and any contiguous range of it is a compact patch.

key = face rank · 4^20 + Hilbert index on the face, as uint64.
"""

from __future__ import annotations

import numpy as np

from hpcds.grids.geometry import lonlat_to_xyz

ORDER = 20  # bits per face coordinate

# (major axis, sign) of each face, in curve order
_FACES = ((0, 1), (1, 1), (2, 1), (0, -1), (1, -1), (2, -1))
# Per face, the signs (su, sv) that turn its equal-angle coordinates (a, b) — of axes
# (axis+1) % 3 and (axis+2) % 3 — into the Hilbert frame (u, v) = (su·a, sv·b). The Hilbert
# curve below runs from corner (u, v) = (-1, -1) to (+1, -1); these signs make the end corner
# of each face the start corner of the next (found by a search over the 8 symmetries of the
# square; no face needed the swap of u and v). Checked by the continuity test.
_SIGNS = ((1, 1), (1, -1), (-1, -1), (-1, -1), (-1, 1), (1, 1))


def hilbert_index(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Hilbert index (uint64) of integer cells (x, y) in [0, 2^order)², vectorised.

    The curve starts at (0, 0) and ends at (2^order - 1, 0); consecutive indices are
    edge-adjacent cells. This is the classic xy2d of Hilbert's curve (one bit plane per
    step, rotating the remaining bits into the sub-square's frame), with the rotation done
    branch-free: "reflect" is x ^= mask, "swap" is the xor swap.
    """
    if order > 32:
        raise ValueError(f"order {order} > 32 does not fit the uint32 cell coordinates")
    x = np.asarray(x, dtype=np.uint32).copy()
    y = np.asarray(y, dtype=np.uint32).copy()
    mask = np.uint32((1 << order) - 1)
    one = np.uint32(1)
    d = np.zeros(x.shape, dtype=np.uint64)
    for bit in range(order - 1, -1, -1):
        rx = (x >> np.uint32(bit)) & one
        ry = (y >> np.uint32(bit)) & one
        d |= ((rx * np.uint32(3)) ^ ry).astype(np.uint64) << np.uint64(2 * bit)
        # lower quadrants (ry = 0) turn: the right one reflects, both swap x and y
        not_ry = ry ^ one
        reflect = (rx & not_ry) * mask
        x ^= reflect
        y ^= reflect
        swap = (x ^ y) * not_ry
        x ^= swap
        y ^= swap
    return d


def sfc_keys(xyz: np.ndarray, order: int = ORDER) -> np.ndarray:
    """(n,) uint64 curve keys of points (n, 3) (need not be unit vectors)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    axis = np.argmax(np.abs(xyz), axis=1)
    rows = np.arange(xyz.shape[0])
    major = xyz[rows, axis]
    face = np.where(major > 0, axis, axis + 3)  # the face's rank in _FACES
    major = np.abs(major)
    a = xyz[rows, (axis + 1) % 3] / major
    b = xyz[rows, (axis + 2) % 3] / major
    # points on a face's centre lines (the poles, 0°E, the equator...) come out as ±1e-17
    # from cos(90°) rounding; one side of the central cell boundary, not both
    a = np.where(np.abs(a) < 1e-12, 0.0, a)
    b = np.where(np.abs(b) < 1e-12, 0.0, b)
    signs = np.asarray(_SIGNS, dtype=np.float64)[face]
    # equal-angle coordinates in [-1, 1]: cells of nearly equal size over the whole face
    u = signs[:, 0] * np.arctan(a) * (4.0 / np.pi)
    v = signs[:, 1] * np.arctan(b) * (4.0 / np.pi)
    side = 1 << order
    i = np.clip(np.floor((u + 1.0) * (side / 2.0)), 0, side - 1)
    j = np.clip(np.floor((v + 1.0) * (side / 2.0)), 0, side - 1)
    d = hilbert_index(i.astype(np.uint32), j.astype(np.uint32), order)
    return (face.astype(np.uint64) << np.uint64(2 * order)) | d


def sfc_order(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """(n,) int64 permutation: position k of the curve holds native cell perm[k].

    A stable sort, so cells sharing a key (e.g. the points of a pole row) keep their native
    order.
    """
    keys = sfc_keys(lonlat_to_xyz(lat_deg, lon_deg))
    return np.argsort(keys, kind="stable").astype(np.int64)
