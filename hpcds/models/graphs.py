"""The model's graphs as torch tensors: encoder HR → hidden, decoder hidden → HR, and the
refiner's HR → HR neighbourhoods.

Hidden nodes are `make_grid(cfg.hidden_grid)` (SFC order, like every node set).
  encoder: every HR node SENDS to its `encoder_knn` nearest hidden nodes — the transpose of
           knn_graph(src=hidden, dst=HR, k), re-sorted by receiver (hidden node), with edge
           attributes recomputed for the new direction (the HR node seen from the hidden node).
           A hidden node nearest to no HR node has no incoming edge (the op gives it 0).
  decoder: every HR node RECEIVES from its `decoder_knn` nearest hidden nodes.
  refiner: every HR node RECEIVES from its `refiner_knn` nearest HR nodes (itself first):
           the only path that mixes information between neighbouring HR nodes below the
           hidden grid's spacing (see downscaler.py for why the denoiser needs it).
Edge attributes [east, north, distance] (radians) are divided by a per-graph length scale
(the longest edge of that graph), so they are O(1) on every grid from 100 km to 4 km. The
scale comes from the FULL graph: a shard uses the same ModelGraphs fields, sliced.

Hidden-node features are the unit vectors (x, y, z), standardised per component over the
hidden grid: O(1) with structure even on a small limited-area domain, where raw xyz barely
varies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from hpcds.config.schema import ModelConfig
from hpcds.grids import Graph, Grid, cached_graph, knn_graph, make_grid
from hpcds.grids.graph import edge_attributes
from hpcds.indices import index_tensor


@dataclass(frozen=True, eq=False)
class ModelGraphs:
    """encoder_*: (E_enc,) senders in HR, receivers in hidden (sorted), edge_attr (E_enc, 3);
    decoder_*: (E_dec,) senders in hidden, receivers in HR (sorted), edge_attr (E_dec, 3);
    refiner_*: (E_ref,) senders in HR, receivers in HR (sorted), edge_attr (E_ref, 3);
    hidden_features: (n_hidden, 3) float32; *_length_scale: the radians per unit of edge_attr.
    Index tensors INDEX_DTYPE (int32, see `index_tensor`), the rest float32, all on CPU.

    hr_range / hidden_range: None for the full graphs; for ONE model-parallel shard's graphs
    (hpcds/models/shard_graphs.py) the (start, stop) destinations present: encoder receivers
    in hidden_range, decoder and refiner receivers in hr_range (ids stay global), and
    hidden_features (h1 - h0, 3) only that range's rows."""

    encoder_senders: torch.Tensor
    encoder_receivers: torch.Tensor
    encoder_edge_attr: torch.Tensor
    decoder_senders: torch.Tensor
    decoder_receivers: torch.Tensor
    decoder_edge_attr: torch.Tensor
    refiner_senders: torch.Tensor
    refiner_receivers: torch.Tensor
    refiner_edge_attr: torch.Tensor
    hidden_features: torch.Tensor
    n_hr: int
    n_hidden: int
    encoder_length_scale: float
    decoder_length_scale: float
    refiner_length_scale: float
    hr_range: tuple[int, int] | None = None
    hidden_range: tuple[int, int] | None = None

    @property
    def is_shard(self) -> bool:
        return self.hr_range is not None


def transpose_graph(graph: Graph, src: Grid, dst: Grid) -> Graph:
    """`graph` (src → dst, all destinations) reversed: dst → src, sorted by the new receiver
    (stable, so each new receiver's edges keep their old order), attributes recomputed."""
    if graph.dst_range != (0, graph.n_dst):
        raise ValueError("transpose needs the full graph (dst_range covering every node)")
    order = np.argsort(graph.senders, kind="stable")
    senders, receivers = graph.receivers[order], graph.senders[order]
    attr = edge_attributes(dst.unit_vectors()[senders], src.unit_vectors()[receivers])
    return Graph(senders, receivers, attr, graph.n_dst, graph.n_src, (0, graph.n_src))


def hidden_node_features(hidden: Grid) -> np.ndarray:
    """(n_hidden, 3) float32: unit vectors standardised per component over the grid."""
    xyz = hidden.unit_vectors()
    std = xyz.std(axis=0)
    return ((xyz - xyz.mean(axis=0)) / np.where(std > 1e-6, std, 1.0)).astype(np.float32)


def _normalised(graph: Graph) -> tuple[torch.Tensor, float]:
    scale = float(graph.edge_attr[:, 2].max()) if graph.num_edges else 1.0
    scale = scale if scale > 0 else 1.0
    return torch.from_numpy(graph.edge_attr / np.float32(scale)), scale


def build_model_graphs(cfg: ModelConfig, hr_grid: Grid,
                       cache_dir: str | os.PathLike | None = None) -> ModelGraphs:
    """Hidden grid, encoder, decoder and refiner graphs for `hr_grid` (through the graph
    cache)."""
    hidden = make_grid(cfg.hidden_grid)
    k_enc, k_dec = int(cfg.encoder_knn), int(cfg.decoder_knn)
    encoder = cached_graph(
        "encoder-knn-transposed", {"src": hr_grid, "dst": hidden, "k": k_enc},
        lambda: transpose_graph(knn_graph(hidden, hr_grid, k_enc), hidden, hr_grid),
        cache_dir)
    decoder = cached_graph(
        "knn", {"src": hidden, "dst": hr_grid, "k": k_dec, "dst_range": (0, hr_grid.size)},
        lambda: knn_graph(hidden, hr_grid, k_dec), cache_dir)
    k_ref = min(int(cfg.refiner_knn), hr_grid.size)
    refiner = cached_graph(
        "knn", {"src": hr_grid, "dst": hr_grid, "k": k_ref, "dst_range": (0, hr_grid.size)},
        lambda: knn_graph(hr_grid, hr_grid, k_ref), cache_dir)
    enc_attr, enc_scale = _normalised(encoder)
    dec_attr, dec_scale = _normalised(decoder)
    ref_attr, ref_scale = _normalised(refiner)
    return ModelGraphs(
        encoder_senders=index_tensor(encoder.senders),
        encoder_receivers=index_tensor(encoder.receivers),
        encoder_edge_attr=enc_attr,
        decoder_senders=index_tensor(decoder.senders),
        decoder_receivers=index_tensor(decoder.receivers),
        decoder_edge_attr=dec_attr,
        refiner_senders=index_tensor(refiner.senders),
        refiner_receivers=index_tensor(refiner.receivers),
        refiner_edge_attr=ref_attr,
        hidden_features=torch.from_numpy(hidden_node_features(hidden)),
        n_hr=hr_grid.size, n_hidden=hidden.size,
        encoder_length_scale=enc_scale, decoder_length_scale=dec_scale,
        refiner_length_scale=ref_scale)
