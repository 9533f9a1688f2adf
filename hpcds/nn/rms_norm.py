"""RMS norm over the last dim (the blocks' per-head qk-norm) as the dispatch op `rms_norm`.

    rms_norm(x, weight, eps) = x · rsqrt(mean(x², -1) + eps) · weight
        x (…, d), weight (d,) → (…, d) in x's dtype; statistics in float32 (float64 for
        float64 x)

The reference is the formula in torch ops; autograd then records ~6 ops over x's size in
forward and ~12 in backward (square, mean's expand and division, two products for the rsqrt,
the weight's product and sum, the sum of the two paths into dx). At the small peer shape the
decoder's queries and the encoder's keys are (1, 16384, 4, 32) each: the reference's
backward was ~80 ms of a 506 ms backward (1 thread).

`rms_norm_fused` (native/triton) is the same function as an autograd.Function with its
gradient written out, r = rsqrt(mean(x²) + eps) (…, 1) saved beside x:
    forward   ‖x‖ by vector_norm (one read), y = (x·r)·w (one product, one in place)
    backward  t = g·x; dot = t @ w and dw = tᵀ @ r (two matrix–vector reads);
              dx = r·(g·w − x·r²·dot/d) (one product, one addcmul, one in place)
It runs for float32 and float64 x (the statistics' own dtype); for other dtypes (bf16 under
autocast) it is the reference. Parity: tests/nn/test_rms_norm.py.
"""

from __future__ import annotations

import torch

from hpcds.nn.dispatch import register


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (…, d), weight (d,) → x / rms(x) · weight in x's dtype (statistics float32/64)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    x32 = x.to(acc)
    y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return (y * weight.to(acc)).to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        d = x.shape[-1]
        # r (…, 1) = rsqrt(‖x‖²/d + eps): one read of x, the rest on (…, 1)
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d).add_(eps)
        r = r.rsqrt_()
        ctx.save_for_backward(x, weight, r)
        return torch.mul(x, r).mul_(weight)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w, r = ctx.saved_tensors
        d = x.shape[-1]
        t = (g * x).reshape(-1, d)  # (M, d), M = rows
        dw = None
        if ctx.needs_input_grad[1]:
            dw = t.t().mv(r.reshape(-1))  # Σ_rows g·x·r → (d,)
        dx = None
        if ctx.needs_input_grad[0]:
            # d/dx of x·r·w: r·(g·w) − x·r³·Σ(g·w·x)/d
            dot = t.mv(w).view(r.shape)  # (…, 1) = Σ_k g·w·x
            coef = dot.mul_(r.square()).div_(d)  # (…, 1) = r²·dot/d
            dx = torch.addcmul(g * w, x, coef, value=-1).mul_(r)
        return dx, dw, None


def rms_norm_fused(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`rms_norm_reference` with the hand-written gradient (module docstring)."""
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype:
        return rms_norm_reference(x, weight, eps)
    return _RMSNorm.apply(x, weight, eps)


register("rms_norm", "reference", rms_norm_reference)
register("rms_norm", "native", rms_norm_fused)
register("rms_norm", "triton", rms_norm_fused)
