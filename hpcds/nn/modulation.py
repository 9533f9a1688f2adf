"""Noise-conditioned adaptive LayerNorm (DiT's adaLN-Zero).

`modulated_layer_norm(x, scale, shift) = LN(x)·(1 + scale) + shift`: LayerNorm without its
own affine, then a per-sample affine from the noise embedding, broadcast over nodes. The
gate is applied by the block: x ← x + gate·f(modulated_layer_norm(x, ...)).

`AdaLN` maps the noise embedding to the (scale, shift, gate) triples of one block. Its
projection is ZERO-initialised: every gate starts at 0, so every block starts as the
identity and the network is trained from a well-conditioned start (Peebles & Xie 2023).
"""

from __future__ import annotations

import torch
from torch import nn

from hpcds.nn.dispatch import register

LN_EPS = 1e-6


def modulated_layer_norm_reference(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
                                   ) -> torch.Tensor:
    """x (B, N, C), scale/shift (B, C) → (B, N, C) in x's dtype; statistics in float32
    (float64 for float64 x)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    y = nn.functional.layer_norm(x.to(acc), x.shape[-1:], eps=LN_EPS)
    y = y * (1.0 + scale.to(acc)).unsqueeze(1) + shift.to(acc).unsqueeze(1)
    return y.to(x.dtype)


register("modulated_layer_norm", "reference", modulated_layer_norm_reference)


class AdaLN(nn.Module):
    """emb (B, E) → `n` tensors (B, C): SiLU then one zero-initialised Linear(E, n·C).

    A block asks for the chunks it needs, e.g. n = 6 for (shift, scale, gate) × 2 sub-blocks.
    """

    def __init__(self, emb_dim: int, dim: int, n: int):
        super().__init__()
        self.n = n
        self.proj = nn.Linear(emb_dim, n * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.proj(nn.functional.silu(emb)).chunk(self.n, dim=-1)
