"""A learned, noise-conditioned local linear filter for EDM's skip term (issue 12).

EDM writes the denoiser as D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in·x, …). At small σ,
c_skip ≈ 1 and c_out ≈ σ: to remove the noise at the grid scale, F must output −n from an
input in which n has amplitude σ — a σ-dependent high-pass with a gain of 1/σ (14 at
σ = 0.07, 500 at σ_min = 0.002), learned through LayerNorms and attention. The demo's network
did not learn it: below σ ≈ 0.07 it removed almost none of the high-wavenumber noise, and the
members kept a white-noise floor at 2Δx (perf/results/denoiser-error-*.json).

Removing noise where the truth has little power is what a Wiener filter does, and a Wiener
filter is linear and (for a field that is locally smooth) local. So the skip term gets one:

    D(x; σ) = c_skip(σ)·S_σ(x) + c_out(σ)·F(…),
    S_σ(x)_i = x_i + g_v(σ)·Σ_{j ∈ N(i)} w_v(e_ij, σ)·(x_j − x_i),
    g_v = σ² / (σ² + s_v²)

N(i) the HR node's nearest HR neighbours (the refiner's graph), e_ij the edge's geometry,
w (E, V) per edge and variable from a small MLP of the edge geometry and the noise embedding.
g_v makes S_σ → identity as σ → 0, as the Wiener gain P/(P + σ²) does: without it the
filter, trained on the few σ < 0.01 that p_train(σ) draws (0.25 %), went on smoothing at
σ_min and took the members' small scales away (loss 1142 at σ = 0.002 where doing nothing
scores 1; their high-wavenumber power fell to 0.2–0.6 of the truth's). s_v is learned per
variable (log-parametrised, from 0.01).
The weights are O(1) at every σ (a smoothing stencil), so no gain has to be learned; the
differences keep constants exactly; the last layer is zero-initialised, so S_σ = identity and
D is EDM's at initialisation. A least-squares fit of one such 9-point stencil per σ to the
demo's residuals takes the one-step high-band error at σ = 0.05 from ~the noise's power to
0.03–0.3× the truth's (msl, whose spectrum falls off a cliff at 0.27 rad/km, 7.5×).

Precision: the weights come out in the parameters' dtype (bf16 under DeepSpeed); the
differences and the sum run in x's dtype (float64 in the samplers), because x_j − x_i at
bf16's 3 digits would itself be noise far above σ_min.

Sharding: like a graph block, the source rows go through `self.halo` (`NoHalo` in one
process; parallelize.py swaps in the refiner graph's halo exchange): senders index the
extended rows, receivers the local ones.

Shapes: x (B, N, V), σ (B,), emb (B, E_emb), senders/receivers (E,), edge_attr (E, A)
→ (B, N, V).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcds.nn.blocks import NoHalo


class LocalSkipFilter(nn.Module):
    def __init__(self, n_vars: int, edge_dim: int, emb_dim: int, hidden: int = 32,
                 s_init: float = 0.01):
        super().__init__()
        self.log_s = nn.Parameter(torch.full((n_vars,), math.log(s_init)))
        self.edge = nn.Linear(edge_dim, hidden)
        self.noise = nn.Linear(emb_dim, hidden)
        self.out = nn.Linear(hidden, n_vars)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.halo = NoHalo()

    def weights(self, emb: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """emb (B, E_emb), edge_attr (E, A) → w (B, E, V) in the parameters' dtype."""
        dt = self.out.weight.dtype
        h = self.edge(edge_attr.to(dt))[None] + self.noise(emb.to(dt))[:, None]  # (B, E, H)
        return self.out(nn.functional.silu(h))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, emb: torch.Tensor,
                senders: torch.Tensor, receivers: torch.Tensor, edge_attr: torch.Tensor
                ) -> torch.Tensor:
        """x (B, N, V), σ (B,) → S_σ(x) (B, N, V) in x's dtype."""
        s2 = (2 * self.log_s).exp().to(x.dtype)  # (V,)
        s = sigma.to(x.dtype)[:, None, None] ** 2
        w = self.weights(emb, edge_attr).to(x.dtype) * (s / (s + s2))  # (B, E, V)
        x_src, _ = self.halo(x)  # (B, N_ext, V): senders index these rows
        diff = x_src.index_select(1, senders) - x.index_select(1, receivers)  # (B, E, V)
        return x.index_add(1, receivers, w * diff)
