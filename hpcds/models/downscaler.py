"""F_θ: the graph encoder–processor–decoder that EDM preconditions (diffusion/precond.py).

    x_in, cond (B, N_hr, V), forcings (B, N_hr, F), c_noise (B,)
      emb    = NoiseEmbedding(c_noise)                          (B, C)   → adaLN of every block
      h_hr   = MLP([x_in, cond, forcings])                      (B, N_hr, C)
      h_hid  = MLP(hidden-node geometry)                        (B, N_hid, C)
      h_hid  = encoder  GraphAttentionBlock  HR → hidden        queries h_hid, keys/values h_hr
      h_hid  = processor L × WindowAttentionBlock over SFC-ordered hidden nodes (window W)
      h_out  = decoder  GraphAttentionBlock  hidden → HR        queries h_hr, keys/values h_hid;
               its residual stream is h_hr, i.e. the skip from the input embedding
      h_out  = refiner  R × GraphAttentionBlock  HR → HR        each HR node attends to its
               `refiner_knn` nearest HR nodes (queries, keys and values all h_out)
      out    = Linear(modLN(h_out))                             (B, N_hr, V), zero-initialised
At initialisation every block is the identity and the output is exactly 0 (so D = c_skip·x).

Activation checkpointing (`model.activation_checkpointing`, with grad enabled): every block —
input embedding, encoder, each processor block, decoder, each refiner block, output head —
runs under torch.utils.checkpoint (non-reentrant). Only the blocks' inputs stay alive after
the forward pass (plus the noise and hidden embeddings' small activations); the backward
recomputes one block at a time. `model.graph_block_rows` > 0 also runs each graph block's
destination side in checkpointed pieces of that many rows (`GraphAttentionBlock`): a
recomputed HR block then holds its keys/values and one piece, not all its rows' activations. The HR-side graph blocks dominate the activations at 4.4 km (per-edge and (N_hr, C)
tensors), so they are checkpointed as well as the processor. Under model parallelism a
recomputed block repeats its halo exchange in backward; the autograd graphs are identical on
every rank, so the recomputes (and their exchanges) come in the same order everywhere
(tests/distributed/test_checkpointing_sharded.py).

NVTX ranges (hpcds/observe.py): "encoder" (the embeddings and the encoder block),
"processor", "decoder", "refiner" around the forward's components; with activation
checkpointing each block's recompute in backward runs in its component's range again.

Why the refiner: the hidden grid is several HR spacings wide, and the only other path is the
per-node skip. Denoising at small σ means averaging a node's noisy value with its HR
neighbours' — below the hidden spacing nothing else can do that, and without it the sampled
members keep a white-noise floor at high wavenumbers (seen in the demo's spectra: ensemble
power ~30× the truth's there). The refiner is one more graph attention, O(N_hr·k), sharded
like the decoder.

Sharding hooks (applied from outside by `parallelize.py`; nothing here communicates): the
graph index tensors, edge attributes and hidden features are non-persistent buffers to be
replaced by shard-local ones (destination sizes are read off tensor shapes, never stored),
and every block's `halo` module can be swapped for a halo exchange.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hpcds.config.schema import ModelConfig
from hpcds.models.graphs import ModelGraphs
from hpcds.nn import (GraphAttentionBlock, LocalSkipFilter, NoiseEmbedding,
                      WindowAttentionBlock, get_op)
from hpcds.nn.modulation import AdaLN
from hpcds.observe import trace_range

GRAPH_BUFFERS = ("encoder_senders", "encoder_receivers", "encoder_edge_attr",
                 "decoder_senders", "decoder_receivers", "decoder_edge_attr",
                 "refiner_senders", "refiner_receivers", "refiner_edge_attr", "hidden_features")


class OutputHead(nn.Module):
    """h (B, N, C), emb (B, E) → (B, N, V): modulated LN then a zero-initialised Linear."""

    def __init__(self, dim: int, emb_dim: int, out_dim: int, norm_op):
        super().__init__()
        self.adaln = AdaLN(emb_dim, dim, 2)
        self.linear = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.norm_op = norm_op

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaln(emb)
        return self.linear(self.norm_op(h, scale, shift))


class InputEmbedding(nn.Sequential):
    """x_in, cond (B, N, V), forcings (B, N, F) → (B, N, C) through an MLP of their
    concatenation. One module, so that checkpointing it keeps its three inputs (alive anyway)
    and not the (B, N, 2V+F) concatenation, at small widths the widest HR tensor."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x_in: torch.Tensor, cond: torch.Tensor, forcings: torch.Tensor
                ) -> torch.Tensor:
        return super().forward(torch.cat([x_in, cond, forcings], dim=-1))


class DownscalerNet(nn.Module):
    def __init__(self, cfg: ModelConfig, n_vars: int, n_forcings: int, graphs: ModelGraphs):
        super().__init__()
        C, H = cfg.hidden_dim, cfg.num_heads
        self.n_vars, self.n_forcings = int(n_vars), int(n_forcings)
        self.activation_checkpointing = bool(cfg.activation_checkpointing)
        for name in GRAPH_BUFFERS:
            self.register_buffer(name, getattr(graphs, name), persistent=False)
        # built from a part of the graphs (one shard's): what parallelize_model must match;
        # None for the full graphs
        partial = graphs.is_shard and (tuple(graphs.hr_range) != (0, graphs.n_hr) or
                                       tuple(graphs.hidden_range) != (0, graphs.n_hidden))
        self.graph_part = ({"n_hr": graphs.n_hr, "n_hidden": graphs.n_hidden,
                            "hr": tuple(graphs.hr_range), "hidden": tuple(graphs.hidden_range)}
                           if partial else None)

        self.noise_embedding = NoiseEmbedding(cfg.noise_embedding_dim, C)
        self.input_embedding = InputEmbedding(2 * self.n_vars + self.n_forcings, C)
        self.hidden_embedding = nn.Sequential(
            nn.Linear(graphs.hidden_features.shape[1], C), nn.SiLU(), nn.Linear(C, C))
        block = dict(dim=C, heads=H, mlp_ratio=cfg.mlp_ratio, emb_dim=C, backend=cfg.backend)
        edge_dim = graphs.encoder_edge_attr.shape[1]
        rows = int(cfg.graph_block_rows)  # destination rows per checkpointed piece (0: all)
        self.encoder = GraphAttentionBlock(edge_dim=edge_dim, rows=rows, **block)
        self.processor = nn.ModuleList(
            WindowAttentionBlock(window=cfg.window, **block) for _ in range(cfg.processor_layers))
        self.decoder = GraphAttentionBlock(edge_dim=edge_dim, rows=rows, **block)
        self.refiner = nn.ModuleList(
            GraphAttentionBlock(edge_dim=graphs.refiner_edge_attr.shape[1], rows=rows, **block)
            for _ in range(cfg.refiner_layers))
        self.head = OutputHead(C, C, self.n_vars, get_op("modulated_layer_norm", cfg.backend))
        self.skip_filter = (LocalSkipFilter(self.n_vars, graphs.refiner_edge_attr.shape[1], C)
                            if cfg.skip_filter else None)

    def _block(self, name: str | None, blk: nn.Module, *args) -> torch.Tensor:
        """blk(*args), checkpointed when training with activation checkpointing: only the
        block's inputs are kept, and its activations are recomputed in backward (halo
        exchange included: the recompute exchanges again, in the same order on every rank).
        The recompute runs inside the NVTX range `name` (so it shows, nested in "backward",
        as e.g. "processor" with its halo_exchange; None: no range). Under torch.compile the
        checkpoint is traced without the range (hpcds/observe.py)."""
        if self.activation_checkpointing and torch.is_grad_enabled():
            if name is None or torch.compiler.is_compiling():
                return checkpoint(blk, *args, use_reentrant=False)
            return checkpoint(blk, *args, use_reentrant=False,
                              context_fn=lambda: (nullcontext(), trace_range(name)))
        return blk(*args)

    def filter_skip(self, x: torch.Tensor, sigma: torch.Tensor, c_noise: torch.Tensor
                    ) -> torch.Tensor:
        """S_σ(x) for EDM's skip term (`model.skip_filter`; the identity without it): x the
        noisy state (B, N_hr, V) in its own dtype (float64 in the samplers), σ, c_noise (B,)."""
        if self.skip_filter is None:
            return x
        emb = self.noise_embedding(c_noise)  # (B, C)
        return self.skip_filter(x, sigma, emb, self.refiner_senders, self.refiner_receivers,
                                self.refiner_edge_attr)

    def forward(self, x_in: torch.Tensor, cond: torch.Tensor, forcings: torch.Tensor,
                c_noise: torch.Tensor) -> torch.Tensor:
        """x_in = c_in·x_noisy, cond (B, N_hr, V), forcings (B, N_hr, F), c_noise (B,)
        → (B, N_hr, V)."""
        B, N, _ = x_in.shape
        if (x_in.shape[-1] != self.n_vars or cond.shape != x_in.shape
                or forcings.shape != (B, N, self.n_forcings) or c_noise.shape != (B,)):
            raise ValueError(
                f"expected x_in/cond (B, N, {self.n_vars}), forcings (B, N, {self.n_forcings}),"
                f" c_noise (B,); got {tuple(x_in.shape)}, {tuple(cond.shape)}, "
                f"{tuple(forcings.shape)}, {tuple(c_noise.shape)}")
        if self.graph_part is not None and getattr(self, "_hpcds_model_shard", None) is None:
            raise RuntimeError("this DownscalerNet holds one shard's graphs: shard it with "
                               "parallelize_model before calling it")
        emb = self.noise_embedding(c_noise)  # (B, C)
        with trace_range("encoder"):  # the embeddings too: everything up to h_hid
            h_hr = self._block("encoder", self.input_embedding, x_in, cond, forcings)
            h_hid = self.hidden_embedding(self.hidden_features.to(h_hr.dtype))  # (N_hid, C)
            h_hid = h_hid.unsqueeze(0).expand(B, -1, -1)  # h_hr (B, N_hr, C), (B, N_hid, C)
            h_hid = self._block("encoder", self.encoder, h_hid, h_hr, emb,
                                self.encoder_senders, self.encoder_receivers,
                                self.encoder_edge_attr)
        with trace_range("processor"):
            for blk in self.processor:
                h_hid = self._block("processor", blk, h_hid, emb)
        with trace_range("decoder"):
            h_out = self._block("decoder", self.decoder, h_hr, h_hid, emb,
                                self.decoder_senders, self.decoder_receivers,
                                self.decoder_edge_attr)
        with trace_range("refiner"):
            for blk in self.refiner:
                h_out = self._block("refiner", blk, h_out, h_out, emb,
                                    self.refiner_senders, self.refiner_receivers,
                                    self.refiner_edge_attr)
        return self._block(None, self.head, h_out, emb)
