"""Small building blocks: noise embedding, MLP, per-head RMS norm (qk-norm), edge bias."""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcds.config.schema import Backend
from hpcds.nn.dispatch import get_op
from hpcds.nn.rms_norm import rms_norm_reference  # noqa: F401  registers the op


class NoiseEmbedding(nn.Module):
    """c_noise (B,) → (B, out_dim): sinusoidal features, then an MLP.

    EDM feeds c_noise = ln(σ)/4, i.e. about −1.6 … 2.9 for σ ∈ [0.002, 1e5]. The `dim`
    features are cos/sin of c_noise at `dim/2` frequencies spaced geometrically from 1 to
    `max_freq` rad per unit c_noise: the slowest sees the whole range as one smooth ramp, the
    fastest resolves Δln σ ≈ 4·2π/max_freq ≈ 0.25. Computed in float32.
    """

    def __init__(self, dim: int, out_dim: int, max_freq: float = 100.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"noise embedding dim must be even and >= 2, got {dim}")
        self.half, self.max_freq = dim // 2, float(max_freq)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        # frequencies made here, not a buffer: model.to(bf16) must not round them
        acc = torch.promote_types(c_noise.dtype, torch.float32)
        freqs = torch.exp(torch.linspace(0.0, math.log(self.max_freq), self.half,
                                         dtype=acc, device=c_noise.device))
        phase = c_noise.to(acc)[:, None] * freqs  # (B, dim/2)
        features = torch.cat([phase.cos(), phase.sin()], dim=-1)  # (B, dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class MLP(nn.Sequential):
    """(…, dim) → (…, dim) through one hidden layer of `hidden` channels (tanh-GELU)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                         nn.Linear(hidden, dim if out_dim is None else out_dim))


class RMSNorm(nn.Module):
    """x (…, d) → x / rms(x) · weight over the last dim; statistics in float32 (float64 for
    float64 x), result in x's dtype. Used per head on queries and keys (qk-norm): it bounds
    the attention logits, which keeps bf16 training stable. The op `rms_norm` of `backend`
    (hpcds/nn/rms_norm.py)."""

    def __init__(self, dim: int, eps: float = 1e-6, backend: Backend | str = Backend.reference):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.rms_op = get_op("rms_norm", backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rms_op(x, self.weight, self.eps)


class EdgeBias(nn.Module):
    """edge_attr (E, A) → (E, heads): a per-head additive attention bias from the edge
    geometry ([east, north, distance] / length scale). A narrow MLP, but E is ~k× the number
    of high-resolution nodes: its two (E, hidden) activations (Linear, SiLU) would be
    12.5 GiB for the refiner of one O2560 shard at P = 4 (perf/results/dryrun-4km-20261124.md).
    So graphs of more than `chunk` edges are evaluated in pieces of `chunk` rows; under
    autograd each piece is checkpointed (its (chunk, A) input is kept and the hidden
    activations are recomputed in backward), so at most one piece's (chunk, hidden) pair
    exists at a time. The MLP is row-wise: the pieces give the same rows (up to the float
    rounding of differently blocked matrix products)."""

    CHUNK = 1 << 21  # edges per piece: 2·2 M·32 float32 = 0.5 GiB of hidden activations

    def __init__(self, attr_dim: int, heads: int, hidden: int = 32, chunk: int | None = None):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(attr_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, heads))
        self.chunk = int(chunk or self.CHUNK)

    def forward(self, edge_attr: torch.Tensor) -> torch.Tensor:
        if edge_attr.shape[0] <= self.chunk:
            return self.mlp(edge_attr)
        pieces = edge_attr.split(self.chunk)
        if torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            outs = [checkpoint(self.mlp, p, use_reentrant=False) for p in pieces]
        else:
            outs = [self.mlp(p) for p in pieces]
        return torch.cat(outs)
