"""Noise-conditioned LayerNorm in Triton: forward and backward in one kernel each.

    y = (x − μ)·r·(1 + scale[b]) + shift[b],   r = 1/√(σ² + eps),   per row of x (B, N, C)

A program takes a block of rows of one sample as a (BLOCK_N, BLOCK_C) tile, so the per-sample
scale and shift are loaded once per block. The backward writes dx and the block's partial
sums of dscale = Σ dy·x̂ and dshift = Σ dy into a (B, blocks, C) buffer, summed afterwards
by one torch reduction (deterministic, no atomics). Same math as kernels/cuda/layer_norm.h.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# elements per program tile: rows per program = this / C (power of two, at least 1)
TILE_ELEMENTS = 2048


@triton.jit
def _forward_kernel(x_ptr, scale_ptr, shift_ptr, y_ptr, mean_ptr, rstd_ptr, N, C, eps,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    rows = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_C)
    mask = (rows[:, None] < N) & (cols[None, :] < C)
    offs = (b * N + rows[:, None]) * C + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    mu = tl.sum(x, axis=1) / C
    xc = tl.where(mask, x - mu[:, None], 0.0)
    r = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    sc = tl.load(scale_ptr + b * C + cols, mask=cols < C, other=0.0).to(ACC)
    sh = tl.load(shift_ptr + b * C + cols, mask=cols < C, other=0.0).to(ACC)
    y = xc * r[:, None] * (1.0 + sc[None, :]) + sh[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + b * N + rows, mu, mask=rows < N)
    tl.store(rstd_ptr + b * N + rows, r, mask=rows < N)


@triton.jit
def _backward_kernel(x_ptr, scale_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dscale_ptr,
                     dshift_ptr, N, C, n_blocks,
                     BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    rows = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_C)
    mask = (rows[:, None] < N) & (cols[None, :] < C)
    offs = (b * N + rows[:, None]) * C + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
    mu = tl.load(mean_ptr + b * N + rows, mask=rows < N, other=0.0)
    r = tl.load(rstd_ptr + b * N + rows, mask=rows < N, other=0.0)
    sc = tl.load(scale_ptr + b * C + cols, mask=cols < C, other=0.0).to(ACC)
    xh = tl.where(mask, (x - mu[:, None]) * r[:, None], 0.0)
    g = dy * (1.0 + sc[None, :])
    mg = tl.sum(g, axis=1) / C
    mgx = tl.sum(g * xh, axis=1) / C
    dx = r[:, None] * (g - mg[:, None] - xh * mgx[:, None])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    part = (b * n_blocks + blk) * C + cols
    tl.store(dscale_ptr + part, tl.sum(dy * xh, axis=0), mask=cols < C)
    tl.store(dshift_ptr + part, tl.sum(dy, axis=0), mask=cols < C)


def _meta(x):
    B, N, C = x.shape
    block_c = triton.next_power_of_2(C)
    block_n = min(triton.next_power_of_2(max(N, 1)), max(1, TILE_ELEMENTS // block_c))
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    return triton.cdiv(N, block_n), dict(BLOCK_N=block_n, BLOCK_C=block_c, ACC=acc)


def forward(x, scale, shift, eps):
    """x (B, N, C), scale/shift (B, C), all contiguous → y (B, N, C) in x's dtype, mean and
    rstd (B, N) float32 (float64 for float64)."""
    B, N, C = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = torch.empty_like(x)
    mean = torch.empty((B, N), dtype=acc, device=x.device)
    rstd = torch.empty_like(mean)
    n_blocks, meta = _meta(x)
    if B * n_blocks:
        _forward_kernel[(n_blocks, B)](x, scale, shift, y, mean, rstd, N, C, eps, **meta)
    return y, mean, rstd


def backward(dy, x, scale, mean, rstd):
    """dy contiguous → dx (B, N, C), dscale and dshift (B, C) in scale's dtype."""
    B, N, C = x.shape
    n_blocks, meta = _meta(x)
    dx = torch.empty_like(x)
    part = torch.empty((2, B, n_blocks, C), dtype=mean.dtype, device=x.device)
    if B * n_blocks:
        _backward_kernel[(n_blocks, B)](x, scale, dy, mean, rstd, dx, part[0], part[1], N, C,
                                        n_blocks, **meta)
    return dx, part[0].sum(1).to(scale.dtype), part[1].sum(1).to(scale.dtype)
