"""The gated residual that closes every sub-block: x + gate · Linear(h).

    gated_linear(x, h, weight, bias, gate) = x + gate[:, None, :] · (h @ weightᵀ + bias)
        x (B, N, C_out) residual stream, h (B, N, C_in), weight (C_out, C_in), bias (C_out,)
        or None, gate (B, C_out) (per sample: adaLN-Zero's gate) → (B, N, C_out)

The reference evaluates it as written: the Linear's output y (B, N, C_out) is made, scaled
and added, and autograd keeps y for the gate's gradient — in backward that is a mul for
dy = g·dx, a mul and a sum over N for dg, and the sum for the bias: four passes over
(B, N, C_out) besides the two GEMMs.

The `native`/`triton` entry (`gated_linear_folded`) folds the gate into the weights — the
same function, regrouped: g ⊙ (W h + b) = (g ⊙ W) h + g ⊙ b, per sample. W' = g[:, :, None]·W
is (B, C_out, C_in), small next to the (N, C) rows, so the per-node work is one add
(x + g⊙b) and one GEMM accumulating into it in place: (N, C_in) @ W'ᵀ (B = 1: addmm_,
else baddbmm_). Backward: the two GEMMs against W' and the bias' sum over N; the gate's and
the weight's gradients come from (C_out, C_in) products. Nothing of size N is saved beyond
h (which the Linear saves anyway). The results differ from the reference by the rounding of
a differently associated product (parity: tests/nn/test_gated_linear.py).

Plain torch ops (no custom op): autograd, torch.compile and the activation counter of
`hpcds plan` see through it. Under autocast the reference is used: autocast would run the
in-place GEMM on the float32 residual stream in the low-precision dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpcds.nn.dispatch import register


def gated_linear_reference(x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor | None, gate: torch.Tensor) -> torch.Tensor:
    """x (B, N, C_out) + gate (B, C_out)[:, None] · (h (B, N, C_in) @ weightᵀ + bias)."""
    return x + gate.unsqueeze(1) * F.linear(h, weight, bias)


def gated_linear_folded(x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None, gate: torch.Tensor) -> torch.Tensor:
    """`gated_linear_reference` with the gate folded into the weights (module docstring)."""
    dt, dev = x.dtype, x.device.type
    autocast = dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev)  # (meta: never)
    if (autocast or x.dim() != 3
            or any(t.dtype != dt for t in (h, weight, gate))
            or (bias is not None and bias.dtype != dt)):
        return gated_linear_reference(x, h, weight, bias, gate)
    B, N, C_out = x.shape
    w = gate.unsqueeze(2) * weight  # (B, C_out, C_in): row o of sample b scaled by g[b, o]
    gb = (gate * bias).unsqueeze(1) if bias is not None else None  # (B, 1, C_out)
    if B == 1:
        # one 2-D GEMM on the (N, ·) rows (the Linear's own addmm kernel), accumulating into
        # a fresh (N, C_out) tensor — not a view, so the in-place op needs no view rebase
        acc = x.reshape(N, C_out) + gb[0] if gb is not None else x.reshape(N, C_out).clone()
        return acc.addmm_(h.reshape(N, -1), w[0].t()).unsqueeze(0)
    acc = x + gb if gb is not None else x.clone()  # (B, N, C_out), fresh
    return acc.baddbmm_(h, w.transpose(1, 2))


register("gated_linear", "reference", gated_linear_reference)
register("gated_linear", "native", gated_linear_folded)
register("gated_linear", "triton", gated_linear_folded)
