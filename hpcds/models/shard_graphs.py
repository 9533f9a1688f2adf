"""One model-parallel rank's graphs, built without the full graphs (4.4 km: O2560 HR).

`build_model_graphs` builds every edge of the encoder, decoder and refiner (~100 M edges at
O2560, several GiB) and `parallelize_model` then keeps a rank's slice. Here a rank builds
ONLY the edges into its own destinations:

  decoder  hidden → HR, HR rows hr_range:  knn_graph(hidden, hr, k, dst_range=hr_range)
  refiner  HR → HR,     HR rows hr_range:  knn_graph(hr, hr, k, dst_range=hr_range)
  encoder  HR → hidden, hidden rows hidden_range: the HR nodes whose k nearest hidden nodes
           include one of the range's (`encoder_shard_graph`, below)

and the result equals the full graph's slice edge for edge (same order, same attributes):
kNN queries are per destination, and the transposed graph is sorted by (hidden, HR) in both.
Edge attributes are divided by the SAME length scale as the full graph's (its longest edge):
each shard's longest edge is computed locally and `reduce_max` (an all-reduce over the
model-parallel group, or max over all shards in tests) makes it global — the union of the
shards' edges is the full graph, so the max of the shard maxima is the full graph's.
Each shard's raw edges go through the graph cache (`cached_graph`), keyed by its range.

Candidate HR nodes for an encoder shard: HR is cut into SFC chunks of `_HR_CHUNK` cells and
the hidden range into pieces of `_HIDDEN_PIECE` nodes, each summarised by a spherical cap
(centre, angular radius). An HR node n in chunk (c, r) has its k nearest hidden nodes within
d_k(n) <= r + ρ_k(c) (ρ_k(c): the k-th nearest hidden distance of the centre), so the chunk
can reach a piece (c', r') only if angle(c, c') <= r + r' + r + ρ_k(c); only those chunks
are queried. Conservative, hence exact; at P = 4 over O2560 about a third of HR is queried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from hpcds.config.schema import ModelConfig
from hpcds.grids import (Graph, Grid, cached_graph, grid_point_count, knn_graph,
                         shard_ranges)
from hpcds.grids.cache import cached_npy
from hpcds.grids.graph import edge_attributes, unit_vectors_at
from hpcds.grids.grid_cache import cached_grid
from hpcds.indices import index_tensor
from hpcds.models.graphs import ModelGraphs, build_model_graphs, hidden_node_features

_HR_CHUNK = 1 << 16  # HR cells per candidate chunk (SFC-contiguous, so compact)
_HIDDEN_PIECE = 1 << 14  # hidden nodes per cap of the shard's region
_EPS = 1e-6  # radians (6 m) of slack on every cap test: far above arccos rounding (~1e-8)


def _caps(xyz: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Caps of consecutive pieces of `size` rows of xyz (n, 3): centres (m, 3) unit vectors
    and angular radii (m,) radians, each cap holding its piece."""
    centres, radii = [], []
    for a in range(0, len(xyz), size):
        part = xyz[a:a + size]
        c = part.mean(axis=0)
        norm = np.linalg.norm(c)
        c = c / norm if norm > 1e-12 else part[0]
        radii.append(float(np.arccos(np.clip(part @ c, -1.0, 1.0)).max()))
        centres.append(c)
    return np.asarray(centres).reshape(-1, 3), np.asarray(radii)


def encoder_shard_graph(hidden: Grid, hr: Grid, k: int, hidden_range: tuple[int, int]
                        ) -> Graph:
    """Rows hidden_range of transpose_graph(knn_graph(hidden, hr, k), hidden, hr): senders
    (E,) HR ids, receivers (E,) hidden ids in [h0, h1), sorted by (receiver, sender);
    edge_attr (E, 3) the HR node seen from the hidden node. E is about k·n_hr·(h1−h0)/n_hidden."""
    h0, h1 = (int(v) for v in hidden_range)
    if not 0 <= h0 < h1 <= hidden.size:
        raise ValueError(f"hidden_range {hidden_range} is not a non-empty part of "
                         f"[0, {hidden.size})")
    tree = cKDTree(hidden.unit_vectors())
    piece_c, piece_r = _caps(unit_vectors_at(hidden, slice(h0, h1)), _HIDDEN_PIECE)
    senders, receivers = [], []
    for a in range(0, hr.size, _HR_CHUNK):
        xyz = unit_vectors_at(hr, slice(a, min(a + _HR_CHUNK, hr.size)))
        (c,), (r,) = _caps(xyz, len(xyz))
        rho = float(np.atleast_1d(tree.query(c, k=k)[0])[-1])  # chord of the k-th nearest
        reach = r + 2.0 * np.arcsin(min(1.0, rho / 2.0)) + r  # bound on d_k, plus the cap
        gap = np.arccos(np.clip(piece_c @ c, -1.0, 1.0)) - piece_r
        if not np.any(gap <= reach + _EPS):
            continue
        _, idx = tree.query(xyz, k=k)
        idx = np.asarray(idx).reshape(len(xyz), k)
        hit = (idx >= h0) & (idx < h1)
        rows, cols = np.nonzero(hit)  # HR ascending, then nearest first
        senders.append(a + rows)
        receivers.append(idx[rows, cols])
    s = np.concatenate(senders) if senders else np.zeros(0, np.int64)
    r = np.concatenate(receivers) if receivers else np.zeros(0, np.int64)
    order = np.argsort(r, kind="stable")  # by hidden node, HR ascending within each
    s, r = s[order].astype(np.int64), r[order].astype(np.int64)
    attr = np.empty((len(s), 3), np.float32)
    step = 1 << 18
    for a in range(0, len(s), step):
        attr[a:a + step] = edge_attributes(unit_vectors_at(hr, s[a:a + step]),
                                           unit_vectors_at(hidden, r[a:a + step]))
    return Graph(s, r, attr, hr.size, hidden.size, (h0, h1))


def part_specs(cfg: ModelConfig, hr: Grid, hidden: Grid, hr_range: tuple[int, int],
                hidden_range: tuple[int, int]) -> dict[str, tuple[str, dict, Callable]]:
    """name → (cache builder name, cache params, build function) of each part."""
    hr_range = (int(hr_range[0]), int(hr_range[1]))
    hidden_range = (int(hidden_range[0]), int(hidden_range[1]))
    k_enc, k_dec = int(cfg.encoder_knn), int(cfg.decoder_knn)
    k_ref = min(int(cfg.refiner_knn), hr.size)
    return {
        "encoder": ("encoder-knn-transposed-shard",
                    {"src": hr, "dst": hidden, "k": k_enc, "dst_range": hidden_range},
                    lambda: encoder_shard_graph(hidden, hr, k_enc, hidden_range)),
        "decoder": ("knn", {"src": hidden, "dst": hr, "k": k_dec, "dst_range": hr_range},
                    lambda: knn_graph(hidden, hr, k_dec, hr_range)),
        "refiner": ("knn", {"src": hr, "dst": hr, "k": k_ref, "dst_range": hr_range},
                    lambda: knn_graph(hr, hr, k_ref, hr_range)),
    }


def shard_graph_parts(cfg: ModelConfig, hr: Grid, hidden: Grid, hr_range: tuple[int, int],
                      hidden_range: tuple[int, int],
                      cache_dir: str | os.PathLike | None = None) -> dict[str, Graph]:
    """{"encoder", "decoder", "refiner"}: the raw Graphs (global ids, unnormalised
    attributes) into this shard's hidden range (encoder) and HR range (the others). Read
    from the cache, their large arrays are memory maps of the cache files."""
    return _build_parts(part_specs(cfg, hr, hidden, hr_range, hidden_range), cache_dir)


def _build_parts(specs: dict[str, tuple[str, dict, Callable]],
                 cache_dir: str | os.PathLike | None) -> dict[str, Graph]:
    return {name: cached_graph(builder, params, build, cache_dir)
            for name, (builder, params, build) in specs.items()}


def _scaled_attributes(graph: Graph, scale: float,
                       cached_as: tuple[str, dict, str | os.PathLike] | None) -> np.ndarray:
    """(E, 3) float32 graph.edge_attr / scale. cached_as (builder, params, cache_dir): the
    graph's cache identity; the quotients are then written piecewise to a cached .npy and
    memory-mapped (an O2560 shard's refiner alone has 0.6 GB of attributes, and the ranks
    only read them), otherwise divided in memory."""
    divisor = np.float32(scale)
    if cached_as is None:
        attr = np.asarray(graph.edge_attr, np.float32)
        attr = attr.copy() if isinstance(attr, np.memmap) or not attr.flags.writeable else attr
        attr /= divisor  # the same float32 quotients as build_model_graphs'
        return attr
    builder, params, cache_dir = cached_as
    step = 1 << 22

    def fill(out: np.ndarray) -> None:
        for a in range(0, graph.num_edges, step):
            out[a:a + step] = graph.edge_attr[a:a + step] / divisor

    return cached_npy(f"graph-{builder}-attr-scaled", {**params, "scale": float(divisor)},
                      (graph.num_edges, graph.edge_attr.shape[1]), np.float32, fill, cache_dir)


def longest_edges(parts: dict[str, Graph]) -> np.ndarray:
    """(3,) float32 [encoder, decoder, refiner]: the longest edge (radians) of each part;
    0 for a part without edges."""
    return np.array([float(parts[n].edge_attr[:, 2].max()) if parts[n].num_edges else 0.0
                     for n in ("encoder", "decoder", "refiner")], dtype=np.float32)


def assemble_shard_graphs(parts: dict[str, Graph], scales: np.ndarray, hidden: Grid,
                          hr_range: tuple[int, int], hidden_range: tuple[int, int],
                          cached_as: dict[str, tuple] | None = None) -> ModelGraphs:
    """ModelGraphs of one shard: the parts' edges (global ids), attributes divided by the
    GLOBAL longest edges `scales` (3,) (as build_model_graphs: a scale of 0 becomes 1), and
    the hidden features of the shard's rows only (standardised over the whole hidden grid).
    Consumes `parts`: their arrays become the result's tensors (attributes divided in
    place). cached_as: name → (builder, params, cache_dir) of each part's cache entry; the
    divided attributes are then cached too and memory-mapped (`_scaled_attributes`)."""
    fields, lengths = {}, {}
    for name, scale in zip(("encoder", "decoder", "refiner"), np.asarray(scales, np.float32)):
        g = parts[name]
        scale = float(scale) if float(scale) > 0 else 1.0
        # the index arrays become INDEX_DTYPE (int32: half the bytes)
        fields[f"{name}_senders"] = index_tensor(g.senders)
        fields[f"{name}_receivers"] = index_tensor(g.receivers)
        attr = _scaled_attributes(g, scale, None if cached_as is None else cached_as[name])
        fields[f"{name}_edge_attr"] = torch.from_numpy(attr)
        lengths[f"{name}_length_scale"] = scale
    h0, h1 = hidden_range
    features = hidden_node_features(hidden)[h0:h1].copy()
    return ModelGraphs(**fields, hidden_features=torch.from_numpy(features),
                       n_hr=parts["decoder"].n_dst, n_hidden=hidden.size, **lengths,
                       hr_range=tuple(hr_range), hidden_range=tuple(hidden_range))


def build_shard_graphs(cfg: ModelConfig, hr: Grid, hr_range: tuple[int, int],
                       hidden_range: tuple[int, int],
                       cache_dir: str | os.PathLike | None = None,
                       reduce_max: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> ModelGraphs:
    """One shard's ModelGraphs (see the module docstring). reduce_max: (3,) float32 local
    longest edges → the maxima over every shard of the model-parallel group (collective);
    None only when this shard is the whole grid."""
    hidden = cached_grid(cfg.hidden_grid, cache_dir)
    specs = part_specs(cfg, hr, hidden, hr_range, hidden_range)
    parts = _build_parts(specs, cache_dir)
    cached_as = None if cache_dir is None else {
        name: (builder, params, cache_dir) for name, (builder, params, _) in specs.items()}
    local = longest_edges(parts)
    if reduce_max is None:
        if tuple(hr_range) != (0, hr.size) or tuple(hidden_range) != (0, hidden.size):
            raise ValueError("build_shard_graphs: a part of the grid needs reduce_max (the "
                             "longest edges over every shard) for the length scales")
        scales = local
    else:
        scales = np.asarray(reduce_max(local), dtype=np.float32)
    return assemble_shard_graphs(parts, scales, hidden, hr_range, hidden_range, cached_as)


@dataclass(frozen=True)
class GraphParts:
    """What rank `rank` of a model-parallel group of `size` builds: the HR range
    `hr_range` (the one `parallelize_model` will assign it) and the hidden range
    shard_ranges(n_hidden, size)[rank] of the model config's hidden grid; `reduce_max` is
    the group's maximum of a (3,) array (collective over the group's transport)."""

    hr_range: tuple[int, int]
    rank: int
    size: int
    reduce_max: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def for_rank(cls, ctx, n_hr: int, hr_ranges: Sequence[tuple[int, int]] | None = None
                 ) -> "GraphParts | None":
        """ctx: the model-parallel ShardContext; hr_ranges as given to parallelize_model
        (default shard_ranges(n_hr, P)). None for a group of one (build the full graphs)."""
        if ctx.size == 1:
            return None
        hr_ranges = shard_ranges(n_hr, ctx.size) if hr_ranges is None else hr_ranges
        transport = ctx.transport

        def reduce_max(local: np.ndarray) -> np.ndarray:
            return np.max(np.stack(transport.all_gather_object(np.asarray(local))), axis=0)

        a, b = hr_ranges[ctx.rank]
        return cls((int(a), int(b)), int(ctx.rank), int(ctx.size), reduce_max)

    def hidden_range(self, cfg: ModelConfig) -> tuple[int, int]:
        return shard_ranges(grid_point_count(cfg.hidden_grid), self.size)[self.rank]

    def build(self, cfg: ModelConfig, hr: Grid, cache_dir: str | os.PathLike | None = None
              ) -> ModelGraphs:
        """This rank's ModelGraphs (collective over the group: the length scales)."""
        return build_shard_graphs(cfg, hr, self.hr_range, self.hidden_range(cfg), cache_dir,
                                  reduce_max=self.reduce_max)


def model_graphs(cfg: ModelConfig, hr: Grid, cache_dir: str | os.PathLike | None = None,
                 parts: GraphParts | None = None) -> ModelGraphs:
    """The full graphs (parts None) or one rank's (`GraphParts.build`)."""
    if parts is None:
        return build_model_graphs(cfg, hr, cache_dir=cache_dir)
    return parts.build(cfg, hr, cache_dir)
