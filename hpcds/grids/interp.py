"""Linear interpolation between grids: a sparse (n_dst, n_src) matrix on a triangulation.

The source cells are triangulated once (and kept for the life of the source Grid):
  global source:   the spherical Delaunay triangulation, i.e. the convex hull of the unit
                   vectors (``scipy.spatial.ConvexHull``);
  regional source: ``scipy.spatial.Delaunay`` of a gnomonic projection about the source's
                   centre (great circles are straight lines there, so triangle edges are arcs).
A destination point p takes the barycentric weights of the point where its ray from the
Earth's centre meets the plane of its triangle (a, b, c): w_a ∝ p·(b×c), w_b ∝ p·(c×a),
w_c ∝ p·(a×b), normalised to sum 1. Error O(h²) for a smooth field at source spacing h;
constants are reproduced exactly.

Locating p: candidates are the triangles with the nearest centroids; the one where p is most
interior (largest smallest weight) wins, so the choice depends on p alone and per-shard rows
equal the full matrix's rows bit for bit. The few points no nearby candidate contains widen
the search; for a regional source the planar Delaunay first tells whether they are inside
at all (outside by more than `_EDGE` of a cell is a GridError).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import ConvexHull, Delaunay, cKDTree

from hpcds.errors import GridError
from hpcds.grids.cache import cached_arrays
from hpcds.grids.geometry import Grid, lonlat_to_xyz

_CHUNK = 1 << 16  # destinations per batch
_CANDIDATES = (8, 64, 512)  # nearest-centroid triangles tried, widening for the hard cases
_PAIRS = 1 << 20  # (point, candidate triangle) pairs per batch: ~75 MB of temporaries
_INSIDE = -1e-12  # smallest weight still counted as inside (rounding)
# A destination outside a regional source by less than this fraction of a cell (smallest
# weight >= -_EDGE) is taken as on its edge: HR rows on the LR grid's edge row fall slightly
# outside the triangulation because latitude circles are not great circles (the gap is
# ~ h·Δλ·sin φ / 8, below 1% of a cell for LR spacings up to 5°).
_EDGE = 0.05
_DUST = 1e-9  # weights below this are rounding noise of a point on a vertex or an edge
# (the triple products lose ~eps/h relative precision; a 1e-9 weight changes nothing)


@dataclass(frozen=True, eq=False)
class _Triangulation:
    """Triangles of a source grid, oriented so that a·(b×c) > 0.

    vertices: (T, 3) int64 source cell indices;  normals: (T, 3, 3) float64, rows b×c, c×a,
    a×b;  valid: (T,) bool, non-degenerate;  tree: cKDTree of the unit triangle centroids;
    planar: the gnomonic Delaunay (regional) or None (global); frame: (3, 3) its centre and
    axes.
    """

    vertices: np.ndarray
    normals: np.ndarray
    valid: np.ndarray
    tree: cKDTree
    planar: Delaunay | None
    frame: np.ndarray | None


_triangulations: "weakref.WeakKeyDictionary[Grid, _Triangulation]" = (
    weakref.WeakKeyDictionary())


def _gnomonic_frame(xyz: np.ndarray) -> np.ndarray:
    """(3, 3) rows: centre c (normalised mean), east-like e1, north-like e2 at c."""
    c = xyz.mean(axis=0)
    c /= np.linalg.norm(c)
    ref = np.array([0.0, 0.0, 1.0]) if abs(c[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(ref, c)
    e1 /= np.linalg.norm(e1)
    return np.stack([c, e1, np.cross(c, e1)])


def _gnomonic(xyz: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(n, 2) gnomonic coordinates of unit vectors (n, 3) in `frame`."""
    local = xyz @ frame.T
    return local[:, 1:] / local[:, :1]


def _triangulate(src: Grid) -> _Triangulation:
    xyz = src.unit_vectors()
    # coincident cells (the points of a regular grid's pole row) are one vertex: qhull
    # would otherwise wrestle with near-duplicates; the first of them carries the weight
    _, first = np.unique(np.round(xyz, 12) + 0.0, axis=0, return_index=True)
    keep = np.sort(first)
    points = xyz[keep]
    if points.shape[0] < 3:
        raise GridError(f"source grid {src.name} has fewer than 3 distinct cells; "
                        "interpolation needs a larger source grid")
    planar = frame = None
    if src.is_global:
        simplices = ConvexHull(points).simplices
    else:
        frame = _gnomonic_frame(points)
        if np.min(points @ frame[0]) < np.cos(np.deg2rad(80.0)):
            raise GridError(f"regional source grid {src.name} spans more than ~160 degrees; "
                            "use a global source grid or a smaller area")
        planar = Delaunay(_gnomonic(points, frame))
        simplices = planar.simplices
    vertices = keep[simplices].astype(np.int64)
    a, b, c = (xyz[vertices[:, i]] for i in range(3))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    flip = det < 0  # orient every triangle counter-clockwise seen from outside
    vertices[flip] = vertices[flip][:, [0, 2, 1]]
    a, b, c = (xyz[vertices[:, i]] for i in range(3))
    normals = np.stack([np.cross(b, c), np.cross(c, a), np.cross(a, b)], axis=1)
    det = np.abs(det)
    valid = det > 1e-9 * np.median(det)  # qhull can leave slivers of zero area
    centroids = a + b + c
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return _Triangulation(vertices, normals, valid, cKDTree(centroids), planar, frame)


def _triangulation(src: Grid) -> _Triangulation:
    if src not in _triangulations:
        _triangulations[src] = _triangulate(src)
    return _triangulations[src]


def _weights(tri: _Triangulation, p: np.ndarray, cand: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric weights (m, k, 3) of points p (m, 3) in candidate triangles (m, k) and
    their smallest weight (m, k) (-inf for degenerate triangles or p on the far side)."""
    v = np.einsum("mj,mkij->mki", p, tri.normals[cand])
    total = v.sum(axis=2)
    ok = (total > 0) & tri.valid[cand]
    w = v / np.where(ok, total, 1.0)[..., None]
    return w, np.where(ok, w.min(axis=2), -np.inf)


def _try(tri: _Triangulation, p: np.ndarray, idx: np.ndarray, cand: np.ndarray,
         triangle: np.ndarray, weights: np.ndarray, low: np.ndarray) -> None:
    """Give points `idx` their most interior triangle among `cand` (len(idx), k) where it
    beats the one they have (in place). Ties go to the first candidate: deterministic."""
    w, lo = _weights(tri, p[idx], cand)
    pick = np.argmax(lo, axis=1)
    rows = np.arange(idx.size)
    better = lo[rows, pick] > low[idx]
    hit, pick = idx[better], pick[better]
    triangle[hit] = cand[rows[better], pick]
    weights[hit] = w[rows[better], pick]
    low[hit] = lo[rows[better], pick]


def _try_nearest(tri: _Triangulation, p: np.ndarray, idx: np.ndarray, k: int,
                 triangle: np.ndarray, weights: np.ndarray, low: np.ndarray) -> None:
    """`_try` the k triangles with the nearest centroids, in batches of bounded memory."""
    step = max(1, _PAIRS // k)
    for a in range(0, idx.size, step):
        sub = idx[a:a + step]
        _, cand = tri.tree.query(p[sub], k=k)
        _try(tri, p, sub, np.asarray(cand).reshape(sub.size, k), triangle, weights, low)


def _locate(tri: _Triangulation, p: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangle (m,), weights (m, 3) and smallest weight (m,) of each point p (m, 3); the
    smallest weight is < 0 only for points outside (or on the edge of) a regional source."""
    m, n_tri = p.shape[0], tri.vertices.shape[0]
    triangle = np.zeros(m, dtype=np.int64)
    weights = np.zeros((m, 3))
    low = np.full(m, -np.inf)
    todo = np.arange(m)
    for attempt, k in enumerate(_CANDIDATES):
        k = min(k, n_tri)
        _try_nearest(tri, p, todo, k, triangle, weights, low)
        todo = todo[low[todo] < _INSIDE]
        if attempt == 0 and tri.planar is not None and todo.size:
            # a point outside a regional source (or a hair outside its edge) has no better
            # triangle to find: only points inside it go on searching
            todo = todo[tri.planar.find_simplex(_gnomonic(p[todo], tri.frame)) >= 0]
        if todo.size == 0 or k == n_tri:
            break
    if todo.size and tri.planar is not None:
        # inside, yet in none of the candidates: take the planar Delaunay's simplex
        # (brute force: a walk would start from the previous point's simplex, making the
        # answer depend on which other points are in the batch)
        found = tri.planar.find_simplex(_gnomonic(p[todo], tri.frame), bruteforce=True)
        hit = found >= 0
        _try(tri, p, todo[hit], found[hit][:, None], triangle, weights, low)
    elif todo.size:
        # global source: every point is in some triangle; search them all (rare)
        step = max(1, _PAIRS // n_tri)
        for a in range(0, todo.size, step):
            sub = todo[a:a + step]
            every = np.broadcast_to(np.arange(n_tri), (sub.size, n_tri))
            _try(tri, p, sub, every, triangle, weights, low)
    return triangle, weights, low


def _outside_error(lat: np.ndarray, lon: np.ndarray) -> GridError:
    return GridError(f"HR grid extends outside the LR domain ({lat.size} cells outside, e.g. "
                     f"lat {lat[0]:.3f}, lon {lon[0]:.3f}); enlarge the LR area or shrink the "
                     "HR area")


def interpolation_matrix(src: Grid, dst: Grid, rows: tuple[int, int] | None = None
                         ) -> sp.csr_matrix:
    """Linear interpolation from `src` cells to `dst` cells (both SFC order).

    rows: (start, stop) destinations to build (one shard); None = all.
    Returns csr (stop - start, src.size) float64, ≤ 3 non-negative entries per row summing
    to 1. GridError if a destination lies outside a regional source.
    """
    start, stop = (0, dst.size) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start <= stop <= dst.size:
        raise GridError(f"rows {rows} are not inside [0, {dst.size}]")
    tri = _triangulation(src)
    n = stop - start
    columns = np.zeros((n, 3), dtype=np.int64)
    weights = np.zeros((n, 3))
    low = np.zeros(n)
    for a in range(start, stop, _CHUNK):
        b = min(a + _CHUNK, stop)
        p = lonlat_to_xyz(dst.latitudes[a:b], dst.longitudes[a:b])
        t, w, lo = _locate(tri, p)
        columns[a - start:b - start] = tri.vertices[t]
        weights[a - start:b - start] = w
        low[a - start:b - start] = lo
    outside = low < -_EDGE if not src.is_global else np.zeros(n, dtype=bool)
    if outside.any():
        idx = start + np.flatnonzero(outside)
        raise _outside_error(dst.latitudes[idx], dst.longitudes[idx])
    # clip rounding negatives (and the small ones of edge points) and rounding dust (a
    # destination on a source cell gets exactly one entry), then renormalise
    weights = np.where(weights > _DUST, weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = sp.csr_matrix((weights.ravel(), columns.ravel(), np.arange(0, 3 * n + 1, 3)),
                           shape=(n, src.size))
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def cached_interpolation_matrix(src: Grid, dst: Grid, rows: tuple[int, int] | None = None,
                                cache_dir=None) -> sp.csr_matrix:
    """`interpolation_matrix` through the disk cache of `hpcds.grids.cache` (None: none)."""
    start, stop = (0, dst.size) if rows is None else (int(rows[0]), int(rows[1]))

    def build() -> dict[str, np.ndarray]:
        m = interpolation_matrix(src, dst, (start, stop))
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr}

    def check(arrays: dict[str, np.ndarray]) -> None:
        indptr, indices = arrays["indptr"], arrays["indices"]
        if (indptr.shape != (stop - start + 1,) or indptr[-1] != indices.size
                or arrays["data"].shape != indices.shape
                or (indices.size and indices.max() >= src.size)):
            raise ValueError("inconsistent interpolation matrix arrays")

    arrays = cached_arrays("interp", {"src": src, "dst": dst, "rows": (start, stop)}, build,
                           cache_dir, check=check)
    return sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                         shape=(stop - start, src.size))
