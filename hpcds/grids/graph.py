"""Bipartite graphs between grids (encoder HR→hidden, decoder hidden→HR, ...).

Neighbours are found with ``scipy.spatial.cKDTree`` on unit vectors: Euclidean (chord)
distance c = 2 sin(d/2) is monotone in great-circle distance d, so kNN and radius queries on
chords are exact on the sphere. A per-shard build (`dst_range`) queries only the destinations
of that shard: each destination's neighbours do not depend on which others are queried, so
the shards' edges concatenated are the full graph's edges, in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from hpcds.errors import GridError
from hpcds.grids.cache import cached_arrays
from hpcds.grids.geometry import Grid, lonlat_to_xyz

_CHUNK = 1 << 18  # destinations per query batch: bounds temporary memory on huge grids
# cached graph arrays of this size or more are memory-mapped, not read into memory: an
# O2560 shard's graphs are ~3 GB, and the ranks only ever read them
_MMAP_MIN_BYTES = 1 << 26


@dataclass(frozen=True, eq=False)
class Graph:
    """Edges source cell → destination cell, sorted by receiver (CSR-friendly).

    senders:    (E,) int64 source cell indices (SFC order of the source grid)
    receivers:  (E,) int64 GLOBAL destination cell indices, non-decreasing
    edge_attr:  (E, 3) float32 [east, north, distance]: the source seen from the destination
                in the destination's tangent frame (azimuthal equidistant), in radians
    n_src, n_dst: sizes of the source and destination grids
    dst_range:  (start, stop) destinations whose edges are present
    """

    senders: np.ndarray
    receivers: np.ndarray
    edge_attr: np.ndarray
    n_src: int
    n_dst: int
    dst_range: tuple[int, int]

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])

    def indptr(self) -> np.ndarray:
        """(stop - start + 1,) int64: edges of destination start + i are [indptr[i],
        indptr[i+1])."""
        start, stop = self.dst_range
        return np.searchsorted(self.receivers, np.arange(start, stop + 1)).astype(np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"senders": self.senders, "receivers": self.receivers,
                "edge_attr": self.edge_attr,
                "sizes": np.array([self.n_src, self.n_dst, *self.dst_range], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Graph":
        n_src, n_dst, start, stop = (int(v) for v in arrays["sizes"])
        senders = np.asarray(arrays["senders"], dtype=np.int64)
        receivers = np.asarray(arrays["receivers"], dtype=np.int64)
        edge_attr = np.asarray(arrays["edge_attr"], dtype=np.float32)
        e = senders.shape[0]
        if (senders.shape != (e,) or receivers.shape != (e,) or edge_attr.shape != (e, 3)
                or not 0 <= start <= stop <= n_dst):
            raise ValueError("inconsistent graph arrays")
        if e and (senders.min() < 0 or senders.max() >= n_src or receivers.min() < start
                  or receivers.max() >= stop or np.any(np.diff(receivers) < 0)):
            raise ValueError("graph indices out of range or unsorted")
        return cls(senders, receivers, edge_attr, n_src, n_dst, (start, stop))


def edge_attributes(src_xyz: np.ndarray, dst_xyz: np.ndarray) -> np.ndarray:
    """(E, 3) float32 [east, north, distance] of unit vectors src (E, 3) seen from dst (E, 3).

    The direction is that of the great circle dst → src at dst, the length its arc d (rad):
    east = d sin(azimuth), north = d cos(azimuth). Computed in float64.
    """
    dot = np.einsum("ij,ij->i", src_xyz, dst_xyz)
    # atan2(|s × t|, s · t) keeps full precision for tiny and near-antipodal arcs
    dist = np.arctan2(np.linalg.norm(np.cross(src_xyz, dst_xyz), axis=1), dot)
    tangent = src_xyz - dot[:, None] * dst_xyz  # src minus its component along dst
    x, y = dst_xyz[:, 0], dst_xyz[:, 1]
    rho = np.hypot(x, y)
    # local frame; at a pole (rho = 0) take east = +y, north = -x (the 0°E meridian's limit)
    safe = np.where(rho > 0, rho, 1.0)
    east_vec = np.where((rho > 0)[:, None], np.stack([-y / safe, x / safe, 0 * x], 1),
                        np.array([0.0, 1.0, 0.0]))
    north_vec = np.cross(dst_xyz, east_vec)
    e = np.einsum("ij,ij->i", tangent, east_vec)
    n = np.einsum("ij,ij->i", tangent, north_vec)
    norm = np.hypot(e, n)
    scale = np.divide(dist, norm, out=np.zeros_like(dist), where=norm > 0)
    return np.stack([e * scale, n * scale, dist], axis=1).astype(np.float32)


def _check_range(dst_range, n_dst: int) -> tuple[int, int]:
    if dst_range is None:
        return 0, n_dst
    start, stop = (int(v) for v in dst_range)
    if not 0 <= start <= stop <= n_dst:
        raise GridError(f"dst_range {dst_range} is not inside [0, {n_dst}]")
    return start, stop


def unit_vectors_at(grid: Grid, index) -> np.ndarray:
    """(len(index), 3) float64 unit vectors of the cells `index` (an index array or a slice)
    without building the whole grid's: the same values as grid.unit_vectors()[index]."""
    return lonlat_to_xyz(grid.latitudes[index], grid.longitudes[index])


def _assemble(src: Grid, dst: Grid, senders: np.ndarray, receivers: np.ndarray,
              dst_range: tuple[int, int]) -> Graph:
    attr = np.empty((senders.size, 3), dtype=np.float32)
    for a in range(0, senders.size, _CHUNK):
        b = a + _CHUNK
        attr[a:b] = edge_attributes(unit_vectors_at(src, senders[a:b]),
                                    unit_vectors_at(dst, receivers[a:b]))
    return Graph(senders.astype(np.int64), receivers.astype(np.int64), attr, src.size,
                 dst.size, dst_range)


def knn_graph(src: Grid, dst: Grid, k: int, dst_range: tuple[int, int] | None = None) -> Graph:
    """Each destination in `dst_range` receives edges from its k nearest source cells
    (nearest first). E = k · (stop - start)."""
    if int(k) != k or not 1 <= k <= src.size:
        raise GridError(f"k={k} neighbours: need 1 <= k <= {src.size} (source grid size)")
    k = int(k)
    start, stop = _check_range(dst_range, dst.size)
    tree = cKDTree(src.unit_vectors())
    senders = np.empty((stop - start, k), dtype=np.int64)
    for a in range(start, stop, _CHUNK):
        b = min(a + _CHUNK, stop)
        _, idx = tree.query(unit_vectors_at(dst, slice(a, b)), k=k)
        senders[a - start:b - start] = np.asarray(idx).reshape(b - a, k)
    receivers = np.repeat(np.arange(start, stop, dtype=np.int64), k)
    return _assemble(src, dst, senders.ravel(), receivers, (start, stop))


def radius_graph(src: Grid, dst: Grid, radius_rad: float,
                 dst_range: tuple[int, int] | None = None,
                 max_neighbours: int | None = None) -> Graph:
    """Each destination receives edges from every source cell within great-circle distance
    `radius_rad` (nearest first; only the nearest `max_neighbours` if given). A destination
    with no source in reach gets no edge."""
    if not 0 < radius_rad < np.pi:
        raise GridError(f"radius {radius_rad} rad: need 0 < radius < pi")
    if max_neighbours is not None and (int(max_neighbours) != max_neighbours
                                       or max_neighbours < 1):
        raise GridError(f"max_neighbours={max_neighbours}: need a positive integer or None")
    start, stop = _check_range(dst_range, dst.size)
    tree = cKDTree(src.unit_vectors())
    src_xyz, dst_xyz = src.unit_vectors(), dst.unit_vectors()
    # slightly generous chord, then the exact great-circle test below decides
    chord = 2.0 * np.sin(radius_rad / 2.0) * (1.0 + 1e-9)
    senders_parts, receivers_parts = [], []
    for a in range(start, stop, _CHUNK):
        b = min(a + _CHUNK, stop)
        counts = tree.query_ball_point(dst_xyz[a:b], chord, return_length=True)
        kmax = int(counts.max()) if counts.size else 0
        if max_neighbours is not None:
            kmax = min(kmax, int(max_neighbours))
        if kmax == 0:
            continue
        _, idx = tree.query(dst_xyz[a:b], k=kmax, distance_upper_bound=chord)
        idx = np.asarray(idx).reshape(b - a, kmax)
        rows = np.broadcast_to(np.arange(a, b)[:, None], idx.shape)
        found = idx < src.size  # misses come back as index n_src
        s, r = idx[found], rows[found]
        dot = np.einsum("ij,ij->i", src_xyz[s], dst_xyz[r])
        arc = np.arctan2(np.linalg.norm(np.cross(src_xyz[s], dst_xyz[r]), axis=1), dot)
        keep = arc <= radius_rad
        senders_parts.append(s[keep])
        receivers_parts.append(r[keep])
    senders = np.concatenate(senders_parts) if senders_parts else np.empty(0, np.int64)
    receivers = np.concatenate(receivers_parts) if receivers_parts else np.empty(0, np.int64)
    return _assemble(src, dst, senders, receivers, (start, stop))


def _check_graph(arrays: dict[str, np.ndarray]) -> None:
    Graph.from_arrays(arrays)


def cached_graph(builder_name: str, params: dict, build_fn, cache_dir: str | os.PathLike | None
                 ) -> Graph:
    """`build_fn()` → Graph, through the disk cache in `cache_dir` (None: no cache).

    params must identify the graph completely: pass the Grids themselves (they hash by name,
    size and coordinates) and every builder argument, e.g.
    ``cached_graph("knn", {"src": hr, "dst": hidden, "k": 8, "dst_range": (a, b)},
    lambda: knn_graph(hr, hidden, 8, (a, b)), cache_dir)``.
    Large arrays read from the cache are copy-on-write memory maps of the entry's file.
    """
    arrays = cached_arrays(f"graph-{builder_name}", params,
                           lambda: build_fn().to_arrays(), cache_dir, check=_check_graph,
                           mmap_min_bytes=_MMAP_MIN_BYTES)
    return Graph.from_arrays(arrays)
