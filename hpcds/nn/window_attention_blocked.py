"""Fused sliding-window attention on CPU: blocked over the band, FlashAttention-style.

The contract of `window_attention_reference` (query i attends key j iff
|(i + kv_offset) − j| ≤ W/2 and 0 ≤ j < N_k), but nothing of size N·W is kept: the forward
saves `out` (B, N, H, d) and the log-sum-exp `lse` (B, N, H) (float32; float64 for float64
inputs) beside the inputs, and the backward recomputes each block's logits from q, k and lse
(D_i = dout_i·out_i, ds = p ⊙ (dp − D)). Memory beyond the inputs: O(N·C), plus one group's
transient (`GROUP_ELEMENTS`).

Blocking. Queries are cut into blocks of r rows, r = W/2 halved while above `BLOCK_ROWS`, so
r divides W. Block t (queries t·r … t·r + r − 1) reaches keys t·r + kv_offset − W/2 …
t·r + kv_offset + r − 1 + W/2: a slab of S = r + W keys under the SAME (r, S) band in every
block (row ρ sees slots ρ … ρ + W). The slabs of a group of blocks are overlapping strided views
(`unfold`, stride r rows) of one contiguous key range — no gather, no copy — zero-padded only
where the range leaves [0, N_k) (those slots are masked). The per-block attention is PyTorch's
CPU flash-attention kernel (`aten::_scaled_dot_product_flash_attention_for_cpu` and its
`_backward`: tiled, vectorised, online softmax, float32 accumulation for bf16 inputs; it takes
the band as an additive mask and returns the lse), called once per group with the blocks as its
batch; a Python loop over groups, never over tokens. In backward, the slabs' dk/dv rows are
added back into their key range with S/r shifted adds (slabs overlap by W keys), accumulated in
float32 (float64).

Wrapped as the `torch.library` custom op `hpcds::window_attention_blocked` (+ `_backward`) with
fake implementations, so `torch.compile` traces it as one node. Autocast is disabled inside (the
inputs arrive in one dtype); the output is in the inputs' dtype. No host synchronisation: every
shape and bound is a Python int. CPU tensors only (`hpcds.nn.window_attention_backends` sends
CUDA tensors to flex_attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpcds.nn.fused_ops import acc_dtype
from hpcds.nn.window_attention import check_window_args

Tensor = torch.Tensor

BLOCK_ROWS = 128  # the largest query block r below W/2 (perf/results/kernels-*-window.md)
GROUP_ELEMENTS = 1 << 21  # one group's transient buffers: 8 MiB each in float32
_MASKED = -1e30  # finite: a padded query row with every key masked stays NaN-free



def _flash_forward(*args, **kwargs) -> tuple[Tensor, Tensor]:
    """PyTorch's CPU flash-attention forward: q (n, H, r, d), k/v (n, H, S, d), an additive
    mask broadcastable to (n, H, r, S) in q's dtype → out (n, H, r, d), lse (n, H, r)."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*args, **kwargs)


def _flash_backward(*args, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
    """Its backward: (dout, q, k, v, out, lse, dropout, causal) → dq, dk, dv (q's dtype)."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(*args, **kwargs)


def block_rows(window: int) -> int:
    """r: W/2 halved while it is even and above BLOCK_ROWS (so r divides W)."""
    r = window // 2
    while r > BLOCK_ROWS and r % 2 == 0:
        r //= 2
    return r


def _rows(t: Tensor, start: int, stop: int) -> Tensor:
    """t[start:stop] (rows along dim 0), zero rows where [start, stop) leaves [0, len(t))."""
    a, b = max(start, 0), min(stop, t.shape[0])
    if b <= a:
        return t.new_zeros((stop - start, *t.shape[1:]))
    x = t[a:b]
    if a > start or stop > b:
        x = F.pad(x, [0, 0] * (t.dim() - 1) + [a - start, stop - b])
    return x


class _Blocking:
    """The block geometry of one call: r, S, the groups of blocks, the band mask."""

    def __init__(self, q: Tensor, n_k: int, window: int, kv_offset: int):
        B, N, H, d = q.shape
        self.N, self.n_k, self.W, self.offset = N, n_k, window, kv_offset
        self.r = r = block_rows(window)
        self.S = S = r + window
        self.n_blocks = -(-N // r)
        self.row_elements = H * d  # elements of one query or key row
        self.scale = d ** -0.5
        self.mask_value = max(_MASKED, torch.finfo(q.dtype).min)
        rel = torch.arange(S, device=q.device)[None, :] - torch.arange(r, device=q.device)[:, None]
        self.blocked = (rel < 0) | (rel > window)  # (r, S): row ρ sees slots ρ … ρ + W
        self.band = torch.zeros((r, S), dtype=q.dtype, device=q.device).masked_fill_(
            self.blocked, self.mask_value)  # additive, in q's dtype (the kernel's requirement)

    def groups(self, rows_per_block: int):
        """(g0, nb, rows, k0) of each group: first query row, blocks, real rows, first key.
        A group has at most GROUP_ELEMENTS / (rows_per_block · H · d) blocks (rows_per_block:
        r for the forward's outputs, S for the backward's dk/dv slabs). The blocks whose slab
        leaves [0, N_k) (at most ⌈(W/2 − kv_offset)/r⌉ at the start, ⌈(r + W/2)/r⌉ at the
        end) are groups of their own: only they need a per-block mask."""
        r, n = self.r, self.n_blocks
        G = max(1, GROUP_ELEMENTS // (rows_per_block * self.row_elements))
        # block t's slab is t·r + kv_offset − W/2 + [0, S)
        first = min(n, max(0, -(-(self.W // 2 - self.offset) // r)))
        last = min(n, max(first, (self.n_k - self.offset - self.W // 2) // r))
        for a, z in ((0, first), (first, last), (last, n)):
            for t in range(a, z, G):
                nb = min(G, z - t)
                g0 = t * r
                yield g0, nb, min(nb * r, self.N - g0), g0 + self.offset - self.W // 2

    def mask(self, k0: int, nb: int) -> Tensor:
        """The additive mask of a group: the band (r, S), or (nb, 1, r, S) with the slots
        outside [0, N_k) masked too when the group's keys leave that range."""
        if k0 >= 0 and k0 + (nb - 1) * self.r + self.S <= self.n_k:
            return self.band
        dev = self.band.device
        key = (k0 + self.r * torch.arange(nb, device=dev)[:, None]
               + torch.arange(self.S, device=dev))
        outside = (key < 0) | (key >= self.n_k)  # (nb, S)
        blocked = self.blocked[None] | outside[:, None, :]
        return torch.zeros(blocked.shape, dtype=self.band.dtype, device=dev).masked_fill_(
            blocked, self.mask_value)[:, None]

    def queries(self, t: Tensor, g0: int, nb: int) -> Tensor:
        """A per-query tensor's group rows, t (N, H, ...) → (nb, H, r, ...) (a view unless
        padded)."""
        x = _rows(t, g0, g0 + nb * self.r)
        return x.reshape(nb, self.r, *x.shape[1:]).transpose(1, 2)

    def slabs(self, t: Tensor, k0: int, nb: int) -> Tensor:
        """Key/value slabs of a group, t (N_k, H, d) → (nb, H, S, d): overlapping views."""
        return _rows(t, k0, k0 + nb * self.r + self.W).unfold(0, self.S, self.r).transpose(-1, -2)

    def store(self, dst: Tensor, x: Tensor, g0: int, rows: int) -> None:
        """x (nb, H, r, ...) → dst[g0 : g0 + rows] (rows, H, ...)."""
        x = x.transpose(1, 2).reshape(-1, *dst.shape[1:])
        dst[g0:g0 + rows] = x[:rows]

    def overlap_add(self, dst: Tensor, slabs: Tensor, k0: int) -> None:
        """dst (N_k, H, d) += slabs (nb, H, S, d), slab t covering keys k0 + t·r + [0, S):
        chunk c (r rows) of slab t lands on chunk t + c of the group's key range."""
        nb, H, S, d = slabs.shape
        r, m = self.r, S // self.r
        chunks = slabs.transpose(1, 2).reshape(nb, m, r, H, d)
        n_span = (nb + m - 1) * r
        inside = k0 >= 0 and k0 + n_span <= dst.shape[0]
        span = dst[k0:k0 + n_span] if inside else dst.new_zeros((n_span, H, d))
        span = span.view(nb + m - 1, r, H, d)
        for c in range(m):
            span[c:c + nb] += chunks[:, c]
        if not inside:
            a, b = max(k0, 0), min(k0 + n_span, dst.shape[0])
            dst[a:b] += span.view(n_span, H, d)[a - k0:b - k0]


def blocked_forward(q: Tensor, k: Tensor, v: Tensor, window: int, kv_offset: int
                    ) -> tuple[Tensor, Tensor]:
    """q (B, N, H, d), k/v (B, N_k, H, d) one dtype → out (B, N, H, d), lse (B, N, H)."""
    B, N, H, d = q.shape
    geo = _Blocking(q, k.shape[1], window, kv_offset)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, N, H), dtype=acc_dtype(q.dtype), device=q.device)
    with torch.autocast(q.device.type, enabled=False):
        for g0, nb, rows, k0 in geo.groups(geo.r):
            mask = geo.mask(k0, nb)
            for b in range(B):  # the slabs are views of one sample's keys
                o, stats = _flash_forward(geo.queries(q[b], g0, nb), geo.slabs(k[b], k0, nb),
                                          geo.slabs(v[b], k0, nb), attn_mask=mask,
                                          scale=geo.scale)
                geo.store(out[b], o, g0, rows)  # o (nb, H, r, d)
                geo.store(lse[b], stats.to(lse.dtype), g0, rows)  # stats (nb, H, r)
    return out, lse


def blocked_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                     window: int, kv_offset: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) in the inputs' dtype; dk and dv are summed over overlapping slabs in lse's
    dtype. Padded query rows (past N) have q = 0, dout = 0 and lse = 0: finite p, zero ds."""
    B, N, H, d = q.shape
    geo = _Blocking(q, k.shape[1], window, kv_offset)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=lse.dtype, device=q.device)
    dv = torch.zeros(v.shape, dtype=lse.dtype, device=q.device)
    with torch.autocast(q.device.type, enabled=False):
        for g0, nb, rows, k0 in geo.groups(geo.S):
            mask = geo.mask(k0, nb)
            for b in range(B):
                gq, gk, gv = _flash_backward(
                    geo.queries(dout[b], g0, nb), geo.queries(q[b], g0, nb),
                    geo.slabs(k[b], k0, nb), geo.slabs(v[b], k0, nb),
                    geo.queries(out[b], g0, nb), geo.queries(lse[b], g0, nb), 0.0, False,
                    attn_mask=mask, scale=geo.scale)
                geo.store(dq[b], gq, g0, rows)
                geo.overlap_add(dk[b], gk, k0)  # gk, gv (nb, H, S, d)
                geo.overlap_add(dv[b], gv, k0)
    return dq, dk.to(k.dtype), dv.to(v.dtype)


@torch.library.custom_op("hpcds::window_attention_blocked", mutates_args=())
def _forward_op(q: Tensor, k: Tensor, v: Tensor, window: int, kv_offset: int
                ) -> tuple[Tensor, Tensor]:
    return blocked_forward(q, k, v, window, kv_offset)


@_forward_op.register_fake
def _(q, k, v, window, kv_offset):
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        q.new_empty(q.shape[:3], dtype=acc_dtype(q.dtype))


@torch.library.custom_op("hpcds::window_attention_blocked_backward", mutates_args=())
def _backward_op(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                 window: int, kv_offset: int) -> tuple[Tensor, Tensor, Tensor]:
    return blocked_backward(dout, q, k, v, out, lse, window, kv_offset)


@_backward_op.register_fake
def _(dout, q, k, v, out, lse, window, kv_offset):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, window, kv_offset = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse)  # O(N·C): nothing per window slot
    ctx.window, ctx.kv_offset = window, kv_offset


def _backward(ctx, dout, _dlse):
    dq, dk, dv = _backward_op(dout.contiguous(), *ctx.saved_tensors, ctx.window, ctx.kv_offset)
    return dq, dk, dv, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def window_attention_blocked(q: Tensor, k: Tensor, v: Tensor, window: int,
                            kv_offset: int = 0) -> Tensor:
    """`window_attention_reference`'s contract, blocked and recomputing (CPU tensors):
    q (B, N, H, d), k/v (B, N_k, H, d), N_k ≥ N + kv_offset → (B, N, H, d) in the inputs'
    common dtype."""
    check_window_args(q.shape[1], k.shape[1], window, kv_offset)
    dt = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    # the kernel reads any row and head strides but wants each head's d values packed
    q, k, v = (t.to(dt) if t.stride(-1) == 1 else t.to(dt).contiguous() for t in (q, k, v))
    out, _ = _forward_op(q, k, v, int(window), int(kv_offset))
    return out
