"""Fused sparse graph attention in Triton (forward, and backward by recomputation).

One program per (destination node, sample) holds every head at once as an (H, d) tile: for
the decoder's 8 heads × 64 that is one contiguous 2 KiB row of q, and each incoming edge loads
one contiguous row of k and of v. Per destination i and head h:

    s_e   = q_i · k_src(e) / √d + bias_e
    out_i = Σ_e softmax(s)_e v_src(e)            online softmax over the edges of i: one pass,
    lse_i = log Σ_e exp(s_e)                     nothing of size edges × d is ever stored

Backward (FlashAttention style), D_i = dout_i · out_i, p_e = exp(s_e − lse_i),
ds_e = p_e (dout_i · v_src(e) − D_i):
    destination pass  dq_i = Σ_e ds_e k_src(e) / √d; writes p_e, ds_e (edges × heads)
    source pass       dk_j = Σ_{src(e)=j} ds_e q_dst(e) / √d,  dv_j = Σ p_e dout_dst(e), over
                      the source-sorted edge order: a gather, no atomics, deterministic
The same algorithm as kernels/cuda/graph_attention.h, which the tests hold both to. Indices
(senders, receivers) may be int32 or int64: every loaded index is widened to int64 before it
is multiplied by a stride (src · k_sn exceeds 2^31 at 512 channels on the big grids).
Launch grids are (nodes, B): under TRITON_INTERPRET=1 each program costs ~3 ms, so tests use
tens of nodes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _forward_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, senders_ptr, rowptr_ptr, out_ptr, lse_ptr,
                    q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, bias_sb, n_dst, E, H, D, scale,
                    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    hd = offs_h[:, None] * D + tl.arange(0, BLOCK_D)[None, :]  # (BLOCK_H, BLOCK_D)
    mask = (offs_h[:, None] < H) & (tl.arange(0, BLOCK_D)[None, :] < D)
    q = tl.load(q_ptr + b * q_sb + i * q_sn + hd, mask=mask, other=0.0).to(ACC) * scale
    m = tl.full([BLOCK_H], float("-inf"), ACC)
    den = tl.zeros([BLOCK_H], ACC)
    acc = tl.zeros([BLOCK_H, BLOCK_D], ACC)
    for e in range(tl.load(rowptr_ptr + i), tl.load(rowptr_ptr + i + 1)):
        src = tl.load(senders_ptr + e).to(tl.int64)  # int32 or int64 indices: 64-bit offsets
        k = tl.load(k_ptr + b * k_sb + src * k_sn + hd, mask=mask, other=0.0).to(ACC)
        bias = tl.load(bias_ptr + b * bias_sb + e * H + offs_h, mask=offs_h < H, other=0.0)
        s = tl.sum(q * k, axis=1) + bias.to(ACC)
        m_new = tl.maximum(m, s)
        corr = tl.exp(m - m_new)  # exp(-inf) = 0 on the first edge
        p = tl.exp(s - m_new)
        v = tl.load(v_ptr + b * v_sb + src * v_sn + hd, mask=mask, other=0.0).to(ACC)
        den = den * corr + p
        acc = acc * corr[:, None] + p[:, None] * v
        m = m_new
    has = den > 0  # zero in-degree: out = 0
    out = acc / tl.where(has, den, 1.0)[:, None]
    row = (b * n_dst + i) * H
    tl.store(out_ptr + row * D + hd, out.to(out_ptr.dtype.element_ty), mask=mask)
    lse = tl.where(has, m + tl.log(tl.where(has, den, 1.0)), float("-inf"))
    tl.store(lse_ptr + row + offs_h, lse, mask=offs_h < H)


@triton.jit
def _backward_dst_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, senders_ptr, rowptr_ptr, out_ptr,
                         dout_ptr, lse_ptr, dq_ptr, p_ptr, ds_ptr,
                         q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, bias_sb, n_dst, E, H, D, scale,
                         BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    hd = offs_h[:, None] * D + tl.arange(0, BLOCK_D)[None, :]
    mask = (offs_h[:, None] < H) & (tl.arange(0, BLOCK_D)[None, :] < D)
    row = (b * n_dst + i) * H
    q = tl.load(q_ptr + b * q_sb + i * q_sn + hd, mask=mask, other=0.0).to(ACC) * scale
    g = tl.load(dout_ptr + row * D + hd, mask=mask, other=0.0).to(ACC)
    o = tl.load(out_ptr + row * D + hd, mask=mask, other=0.0).to(ACC)
    Di = tl.sum(g * o, axis=1)
    lse = tl.load(lse_ptr + row + offs_h, mask=hmask, other=0.0)
    dq = tl.zeros([BLOCK_H, BLOCK_D], ACC)
    for e in range(tl.load(rowptr_ptr + i), tl.load(rowptr_ptr + i + 1)):
        src = tl.load(senders_ptr + e).to(tl.int64)  # int32 or int64 indices: 64-bit offsets
        k = tl.load(k_ptr + b * k_sb + src * k_sn + hd, mask=mask, other=0.0).to(ACC)
        v = tl.load(v_ptr + b * v_sb + src * v_sn + hd, mask=mask, other=0.0).to(ACC)
        bias = tl.load(bias_ptr + b * bias_sb + e * H + offs_h, mask=hmask, other=0.0)
        p = tl.exp(tl.sum(q * k, axis=1) + bias.to(ACC) - lse)
        ds = p * (tl.sum(g * v, axis=1) - Di)
        dq += ds[:, None] * k
        tl.store(p_ptr + (b * E + e) * H + offs_h, p, mask=hmask)
        tl.store(ds_ptr + (b * E + e) * H + offs_h, ds, mask=hmask)
    tl.store(dq_ptr + row * D + hd, (dq * scale).to(dq_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_src_kernel(q_ptr, dout_ptr, receivers_ptr, perm_ptr, colptr_ptr, p_ptr, ds_ptr,
                         dk_ptr, dv_ptr, q_sb, q_sn, n_dst, n_src, E, H, D, scale,
                         BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    hd = offs_h[:, None] * D + tl.arange(0, BLOCK_D)[None, :]
    mask = (offs_h[:, None] < H) & (tl.arange(0, BLOCK_D)[None, :] < D)
    dk = tl.zeros([BLOCK_H, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_H, BLOCK_D], ACC)
    for t in range(tl.load(colptr_ptr + j), tl.load(colptr_ptr + j + 1)):
        e = tl.load(perm_ptr + t).to(tl.int64)
        i = tl.load(receivers_ptr + e).to(tl.int64)  # int32 or int64: 64-bit offsets
        ds = tl.load(ds_ptr + (b * E + e) * H + offs_h, mask=hmask, other=0.0)
        p = tl.load(p_ptr + (b * E + e) * H + offs_h, mask=hmask, other=0.0)
        q = tl.load(q_ptr + b * q_sb + i * q_sn + hd, mask=mask, other=0.0).to(ACC)
        g = tl.load(dout_ptr + ((b * n_dst + i) * H) * D + hd, mask=mask, other=0.0).to(ACC)
        dk += ds[:, None] * q
        dv += p[:, None] * g
    row = (b * n_src + j) * H
    tl.store(dk_ptr + row * D + hd, (dk * scale).to(dk_ptr.dtype.element_ty), mask=mask)
    tl.store(dv_ptr + row * D + hd, dv.to(dv_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _blocks(H: int, d: int) -> dict:
    return dict(BLOCK_H=triton.next_power_of_2(H), BLOCK_D=triton.next_power_of_2(d))


def forward(q, k, v, bias, senders, receivers, rowptr):
    """q (B, n_dst, H, d), k/v (B, n_src, H, d) with packed (H, d), bias (B, E, H) with packed
    (E, H), senders (E,) int32 or int64, rowptr (n_dst + 1,) int64 (receivers: unused, the
    CSR has them) → out (B, n_dst, H, d) in q's dtype, lse (B, n_dst, H) float32 (float64
    for float64)."""
    B, n_dst, H, d = q.shape
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, n_dst, H), dtype=acc, device=q.device)
    if B * n_dst:
        _forward_kernel[(n_dst, B)](
            q, k, v, bias, senders, rowptr, out, lse, q.stride(0), q.stride(1), k.stride(0),
            k.stride(1), v.stride(0), v.stride(1), bias.stride(0), n_dst, senders.shape[0], H, d,
            d ** -0.5, ACC=_acc(q.dtype), **_blocks(H, d))
    return out, lse


def source_order(senders, n_src):
    """Edges sorted by source (stable) and the source row pointer, both int64 for int32 or
    int64 senders: the edges leaving j are perm[colptr[j] .. colptr[j + 1]]."""
    perm = torch.argsort(senders, stable=True)  # int64
    colptr = torch.searchsorted(senders[perm], torch.arange(n_src + 1, device=senders.device,
                                                            dtype=senders.dtype))
    return perm, colptr


def backward(dout, q, k, v, bias, senders, receivers, rowptr, out, lse):
    """dout contiguous (B, n_dst, H, d) → dq, dk, dv (contiguous, inputs' dtypes) and the
    per-sample bias gradient ds (B, E, H) in lse's dtype."""
    B, n_dst, H, d = q.shape
    n_src, E = k.shape[1], senders.shape[0]
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    p = torch.empty((B, E, H), dtype=lse.dtype, device=q.device)
    ds = torch.empty_like(p)
    meta = dict(ACC=_acc(q.dtype), **_blocks(H, d))
    if B * n_dst:
        _backward_dst_kernel[(n_dst, B)](
            q, k, v, bias, senders, rowptr, out, dout, lse, dq, p, ds, q.stride(0), q.stride(1),
            k.stride(0), k.stride(1), v.stride(0), v.stride(1), bias.stride(0), n_dst, E, H, d,
            d ** -0.5, **meta)
    if B * n_src:
        perm, colptr = source_order(senders, n_src)
        _backward_src_kernel[(n_src, B)](
            q, dout, receivers, perm, colptr, p, ds, dk, dv, q.stride(0), q.stride(1), n_dst,
            n_src, E, H, d, d ** -0.5, **meta)
    return dq, dk, dv, ds
