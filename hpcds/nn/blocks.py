"""Transformer blocks with noise-conditioned adaLN-Zero (pre-norm, gated residuals).

    x ← x + gate₁ · Attn(modLN(x; scale₁, shift₁))
    x ← x + gate₂ · MLP(modLN(x; scale₂, shift₂))

(scale, shift, gate) come from the noise embedding through a zero-initialised `AdaLN`, so
each block is exactly the identity at initialisation. Queries and keys are RMS-normalised
per head (qk-norm). Each gated residual x + gate·Linear(h) (the attention's output
projection, the MLP's last layer) is the dispatch op `gated_linear` (hpcds/nn/gated_linear.py:
the fused backends fold the per-sample gate into the Linear's weights).

Halo hook: blocks never communicate. Before keys/values are projected, the normalised
source/context features go through `self.halo`, which is `NoHalo` (nothing to add) in one
process; `hpcds/models/parallelize.py` swaps in a module that appends the rows of the
neighbouring shards and reports how many it put in front: (B, N, C) → ((B, N_ext, C),
n_left). Normalising before the exchange is exact: modLN acts on each node separately.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hpcds.config.schema import Backend
from hpcds.nn.dispatch import get_op
from hpcds.nn.gated_linear import gated_linear_reference  # noqa: F401  registers the op
from hpcds.nn.layers import MLP, EdgeBias, RMSNorm
from hpcds.nn.modulation import AdaLN


class NoHalo(nn.Module):
    """Single process: the context is the local rows themselves, with no left halo."""

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, int]:
        return h, 0


class _Attention(nn.Module):
    """Projections shared by both blocks: q from the queries' rows, (k, v) from the context
    rows, per-head qk-norm, and the output projection."""

    def __init__(self, dim: int, heads: int, backend: Backend | str = Backend.reference):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not a multiple of heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = RMSNorm(self.head_dim, backend=backend)
        self.k_norm = RMSNorm(self.head_dim, backend=backend)
        self.out = nn.Linear(dim, dim)

    def queries(self, h_q: torch.Tensor) -> torch.Tensor:
        """h_q (B, Nq, C) → q (B, Nq, H, d), qk-normed."""
        B, Nq, _ = h_q.shape
        return self.q_norm(self.q(h_q).view(B, Nq, self.heads, self.head_dim))

    def keys_values(self, h_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_kv (B, Nk, C) → k (qk-normed), v (B, Nk, H, d)."""
        B, Nk, _ = h_kv.shape
        k, v = self.kv(h_kv).view(B, Nk, 2, self.heads, self.head_dim).unbind(2)
        return self.k_norm(k), v

    def qkv(self, h_q: torch.Tensor, h_kv: torch.Tensor):
        """h_q (B, Nq, C), h_kv (B, Nk, C) → q (B, Nq, H, d), k, v (B, Nk, H, d)."""
        return (self.queries(h_q), *self.keys_values(h_kv))

    def project_residual(self, x: torch.Tensor, a: torch.Tensor, gate: torch.Tensor,
                         residual_op) -> torch.Tensor:
        """x (B, N, C) + gate (B, C) · out(a (B, N, H, d) → (B, N, C)), by `residual_op`
        (a `gated_linear` implementation)."""
        return residual_op(x, a.flatten(2), self.out.weight, self.out.bias, gate)


def _mlp_residual(mlp: MLP, x: torch.Tensor, h: torch.Tensor, gate: torch.Tensor,
                  residual_op) -> torch.Tensor:
    """x (B, N, C) + gate (B, C) · mlp(h (B, N, C)): the MLP's last Linear is the gated one."""
    up, act, down = mlp
    return residual_op(x, act(up(h)), down.weight, down.bias, gate)


class GraphAttentionBlock(nn.Module):
    """Destination nodes attend to their source neighbours along graph edges (encoder
    HR → hidden, decoder hidden → HR); the output lives on the destination nodes.

    forward(x_dst (B, N_dst, C), x_src (B, N_src, C), emb (B, E_emb), senders (E,),
            receivers (E,) sorted, edge_attr (E, A)) → (B, N_dst, C)

    Edge geometry enters as a learned per-head additive bias on the logits (`EdgeBias`).

    rows > 0: the destination side (norm, query, attention, projection, MLP) runs on pieces of
    `rows` destination rows — row-wise, so the rows are the same — each piece checkpointed under
    autograd. The source side (norm, halo, keys, values) is computed once. A piece's edges are
    a contiguous range (receivers sorted); the ranges are found once per graph (one host sync,
    then cached) and the piece's receivers are rebased to the piece.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, emb_dim: int,
                 edge_dim: int = 3, backend: Backend | str = Backend.reference,
                 rows: int = 0):
        super().__init__()
        self.attn = _Attention(dim, heads, backend)
        self.edge_bias = EdgeBias(edge_dim, heads)
        self.mlp = MLP(dim, int(round(dim * mlp_ratio)))
        # (shift, scale, gate) for attention and MLP on the destination, (shift, scale) source
        self.adaln = AdaLN(emb_dim, dim, 8)
        self.halo = NoHalo()
        self.attention_op = get_op("graph_attention", backend)
        self.norm_op = get_op("modulated_layer_norm", backend)
        self.residual_op = get_op("gated_linear", backend)
        self.rows = int(rows)
        self._pieces: tuple[tuple, list] | None = None  # (graph key, [(r0, r1, e0, e1)])

    def forward(self, x_dst: torch.Tensor, x_src: torch.Tensor, emb: torch.Tensor,
                senders: torch.Tensor, receivers: torch.Tensor, edge_attr: torch.Tensor
                ) -> torch.Tensor:
        mods = self.adaln(emb)  # 8 × (B, C)
        sh_src, sc_src = mods[6], mods[7]
        h_src, _ = self.halo(self.norm_op(x_src, sc_src, sh_src))  # senders index h_src
        k, v = self.attn.keys_values(h_src)
        n_dst = x_dst.shape[1]
        if self.rows <= 0 or n_dst <= self.rows:
            return self._destination_rows(x_dst, k, v, mods, senders, receivers, edge_attr)
        outs = []
        for r0, r1, e0, e1 in self._piece_bounds(receivers, n_dst):
            args = (x_dst[:, r0:r1], k, v, mods, senders[e0:e1], receivers[e0:e1] - r0,
                    edge_attr[e0:e1])
            if torch.is_grad_enabled():
                outs.append(checkpoint(self._destination_rows, *args, use_reentrant=False))
            else:
                outs.append(self._destination_rows(*args))
        return torch.cat(outs, dim=1)

    def _destination_rows(self, x_dst: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mods: tuple, senders: torch.Tensor, receivers: torch.Tensor,
                          edge_attr: torch.Tensor) -> torch.Tensor:
        """x_dst (B, n, C) rows, k/v (B, N_src, H, d), receivers in [0, n) → (B, n, C)."""
        sh1, sc1, g1, sh2, sc2, g2 = mods[:6]
        q = self.attn.queries(self.norm_op(x_dst, sc1, sh1))
        a = self.attention_op(q, k, v, self.edge_bias(edge_attr), senders, receivers,
                              x_dst.shape[1])
        x = self.attn.project_residual(x_dst, a, g1, self.residual_op)
        return _mlp_residual(self.mlp, x, self.norm_op(x, sc2, sh2), g2, self.residual_op)

    def _piece_bounds(self, receivers: torch.Tensor, n_dst: int) -> list[tuple[int, ...]]:
        """[(r0, r1, e0, e1)]: destination rows [r0, r1) and their edges [e0, e1), found once
        per graph (the buffers are constants; a sharded model's are set before its first
        call)."""
        key = (receivers.data_ptr(), receivers.numel(), n_dst, self.rows)
        if self._pieces is None or self._pieces[0] != key:
            rows = list(range(0, n_dst, self.rows)) + [n_dst]
            if receivers.is_meta:  # `hpcds plan` (shapes only): edges in proportion to rows
                edges = [receivers.numel() * r // n_dst for r in rows]
            else:
                starts = torch.tensor(rows, dtype=receivers.dtype, device=receivers.device)
                edges = torch.searchsorted(receivers, starts).tolist()  # the one host sync
            bounds = [(rows[i], rows[i + 1], edges[i], edges[i + 1])
                      for i in range(len(rows) - 1)]
            if torch.compiler.is_compiling():
                # under torch.compile the read is traced into the graph (dynamo turns
                # .tolist() into data-dependent sizes: a host read at every call, not once)
                # and is not cached: that would mutate the module inside a checkpointed
                # region, which fullgraph tracing refuses (the recompute would not replay it)
                return bounds
            self._pieces = (key, bounds)
        return self._pieces[1]


class WindowAttentionBlock(nn.Module):
    """Each token attends to the `window`+1 tokens centred on it along the sequence (the
    SFC-ordered hidden nodes): x (B, N, C), emb (B, E_emb) → (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, emb_dim: int, window: int,
                 backend: Backend | str = Backend.reference):
        super().__init__()
        self.window = int(window)
        self.attn = _Attention(dim, heads, backend)
        self.mlp = MLP(dim, int(round(dim * mlp_ratio)))
        self.adaln = AdaLN(emb_dim, dim, 6)
        self.halo = NoHalo()
        self.attention_op = get_op("window_attention", backend)
        self.norm_op = get_op("modulated_layer_norm", backend)
        self.residual_op = get_op("gated_linear", backend)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaln(emb)  # each (B, C)
        h = self.norm_op(x, sc1, sh1)
        h_ctx, n_left = self.halo(h)  # (B, n_left + N + n_right, C)
        q, k, v = self.attn.qkv(h, h_ctx)
        a = self.attention_op(q, k, v, self.window, n_left)
        x = self.attn.project_residual(x, a, g1, self.residual_op)
        return _mlp_residual(self.mlp, x, self.norm_op(x, sc2, sh2), g2, self.residual_op)
