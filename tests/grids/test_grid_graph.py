"""kNN and radius graphs against brute force, per-shard builds, edge attributes against
hand-computed azimuths, and the disk cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hpcds.errors import GridError
from hpcds.grids import (Graph, Grid, cached_graph, grid_from_name, knn_graph, radius_graph,
                         shard_ranges)


def point_grid(lat, lon, name="points") -> Grid:
    lat = np.asarray(lat, dtype=np.float64)
    n = lat.size
    return Grid(name, lat, np.asarray(lon, dtype=np.float64) % 360.0, np.full(n, 1.0 / n),
                np.arange(n), (n,), False)


def brute_arcs(src: Grid, dst: Grid) -> np.ndarray:
    """(n_dst, n_src) great-circle distances by haversine (independent of the package)."""
    p1, l1 = np.deg2rad(dst.latitudes)[:, None], np.deg2rad(dst.longitudes)[:, None]
    p2, l2 = np.deg2rad(src.latitudes)[None], np.deg2rad(src.longitudes)[None]
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


@pytest.fixture(scope="module")
def src():
    return grid_from_name("O24")


@pytest.fixture(scope="module")
def dst():
    return grid_from_name("O16")


def test_knn_matches_brute_force(src, dst):
    k = 6
    graph = knn_graph(src, dst, k)
    assert graph.num_edges == k * dst.size
    assert (graph.n_src, graph.n_dst, graph.dst_range) == (src.size, dst.size, (0, dst.size))
    np.testing.assert_array_equal(graph.receivers, np.repeat(np.arange(dst.size), k))
    arcs = brute_arcs(src, dst)
    expected = np.sort(arcs, axis=1)[:, :k]  # compare distances: ties may swap indices
    got = arcs[graph.receivers, graph.senders].reshape(dst.size, k)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(graph.edge_attr[:, 2], got.ravel(), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(graph.indptr(), np.arange(0, k * dst.size + 1, k))


def test_per_shard_builds_concatenate_to_the_full_graph(src, dst):
    full = knn_graph(src, dst, 4)
    parts = [knn_graph(src, dst, 4, dst_range=r) for r in shard_ranges(dst.size, 3)]
    assert parts[1].dst_range == shard_ranges(dst.size, 3)[1]
    assert parts[1].receivers.min() == parts[1].dst_range[0]  # global indices
    for field in ("senders", "receivers", "edge_attr"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, field) for p in parts]),
                                      getattr(full, field))


def test_edge_attributes_by_hand():
    one = np.deg2rad(1.0)
    # seen from (0, 0): 1° east, 1° north, 2° west
    src = point_grid([0.0, 1.0, 0.0], [1.0, 0.0, -2.0])
    graph = knn_graph(src, point_grid([0.0], [0.0]), 3)
    order = np.argsort(graph.senders)
    np.testing.assert_allclose(graph.edge_attr[order],
                               [[one, 0, one], [0, one, one], [-2 * one, 0, 2 * one]],
                               atol=1e-7)
    # from (60N, 0): a point 10° east along the parallel, by the forward-azimuth formula
    p1, p2, dl = np.deg2rad(60.0), np.deg2rad(60.0), np.deg2rad(10.0)
    d = np.arccos(np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl))
    az = np.arctan2(np.sin(dl) * np.cos(p2),
                    np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl))
    graph = knn_graph(point_grid([60.0], [10.0]), point_grid([60.0], [0.0]), 1)
    np.testing.assert_allclose(graph.edge_attr[0], [d * np.sin(az), d * np.cos(az), d],
                               atol=1e-7)
    assert graph.edge_attr.dtype == np.float32
    # at the north pole every neighbour is south: north component -d
    graph = knn_graph(point_grid([89.0], [123.0]), point_grid([90.0], [0.0]), 1)
    e, n, dist = graph.edge_attr[0]
    assert abs(dist - one) < 1e-7 and abs(np.hypot(e, n) - one) < 1e-7


def test_radius_graph_matches_brute_force(src, dst):
    radius = 0.09  # rad, between O24's spacings so that no pair sits on the boundary
    graph = radius_graph(src, dst, radius)
    arcs = brute_arcs(src, dst)
    r, s = np.nonzero(arcs <= radius)
    assert set(zip(graph.receivers.tolist(), graph.senders.tolist())) == set(
        zip(r.tolist(), s.tolist()))
    assert np.all(np.diff(graph.receivers) >= 0)
    capped = radius_graph(src, dst, radius, max_neighbours=3)
    counts = np.bincount(capped.receivers, minlength=dst.size)
    np.testing.assert_array_equal(counts, np.minimum(np.sum(arcs <= radius, axis=1), 3))
    # the kept ones are the nearest
    kept = arcs[capped.receivers, capped.senders]
    third = np.sort(arcs, axis=1)[capped.receivers, 2]
    assert np.all(kept <= third + 1e-12)
    parts = [radius_graph(src, dst, radius, dst_range=rg) for rg in shard_ranges(dst.size, 4)]
    np.testing.assert_array_equal(np.concatenate([p.senders for p in parts]), graph.senders)


def test_bad_graph_arguments(src, dst):
    with pytest.raises(GridError, match="k=0"):
        knn_graph(src, dst, 0)
    with pytest.raises(GridError, match="dst_range"):
        knn_graph(src, dst, 2, dst_range=(5, dst.size + 1))
    with pytest.raises(GridError, match="radius"):
        radius_graph(src, dst, 0.0)


def test_cache_round_trip_and_corrupt_entry(src, dst, tmp_path, caplog):
    builds = []

    def build():
        builds.append(1)
        return knn_graph(src, dst, 3)

    params = {"src": src, "dst": dst, "k": 3, "dst_range": (0, dst.size)}
    first = cached_graph("knn", params, build, tmp_path)
    second = cached_graph("knn", params, build, tmp_path)
    assert len(builds) == 1
    for field in ("senders", "receivers", "edge_attr"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert (second.n_src, second.n_dst, second.dst_range) == (src.size, dst.size,
                                                              (0, dst.size))
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    # other parameters → another entry
    cached_graph("knn", {**params, "k": 4}, lambda: knn_graph(src, dst, 4), tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
    # a truncated file is rebuilt with a warning, and replaced by a good one
    files[0].write_bytes(files[0].read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="hpcds.grids.cache"):
        third = cached_graph("knn", params, build, tmp_path)
    assert len(builds) == 2 and "rebuilding" in caplog.text
    np.testing.assert_array_equal(third.senders, first.senders)
    cached_graph("knn", params, build, tmp_path)
    assert len(builds) == 2


def test_graph_from_bad_arrays_is_refused(src, dst):
    arrays = knn_graph(src, dst, 2).to_arrays()
    arrays["senders"] = arrays["senders"][:-1]
    with pytest.raises(ValueError):
        Graph.from_arrays(arrays)
