"""Sliding-window attention on CUDA through PyTorch's compiled `flex_attention` with a band
block mask (the library way; anemoi-core's sliding window is a flex block mask too).

The mask is the reference's exactly: query i attends key j iff |(i + kv_offset) − j| ≤ W/2 and
0 ≤ j < N_k (keys longer than the queries: a shard's halos, kv_offset = its left halo). The
kernel saves q, k, v, out and the float32 lse: O(N·C), nothing per window slot.

The BlockMask is built here from block-level arithmetic, not with `create_block_mask`, which
evaluates mask_mod on a dense (N, N_k) grid (19 G elements for a 137 k-row shard; eager it
materialises them, compiled it took 4.9 s on an H200): a (Q-block, KV-block) tile is
  - empty   when no pair of it is within W/2 (skipped),
  - full    when every pair is, and the tile is inside both sequences (no mask_mod),
  - partial otherwise (mask_mod applied: the band and j < N_k),
from the tiles' first and last (shifted) indices: O((N / 128) · (N_k / 128)) small integer ops
on the device, once per (N, N_k, W, kv_offset, device) — cached (`band_block_mask`). At the
48-way 4km shard its tile lists equal create_block_mask's (2,153 partial, 3,222 full). The
mask_mod reads kv_offset, W/2 and N_k from captured 0-d int tensors rather than closing over
Python ints, so shards with different offsets share one compiled kernel.

`flex_attention` is compiled once per process (`torch.compile(dynamic=True)`; inductor generates
the Triton kernels, forward and backward); eager flex would materialise the (N, N_k) scores.
Float32, bf16 and fp16 inputs (the caller sends others elsewhere); head dims that are not a
power of two ≥ 16 are zero-padded for the kernel (q·k and p·v are unchanged; the padding is
sliced off). Measured on an H200 at the 48-way shard (perf/results/kernels-20261204-window.md):
bf16 8.4x the reference forward + backward; float32 forward 2.2x but backward 2x slower than
the reference (flex's float32 backward kernel, the same with create_block_mask's mask).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from hpcds.nn.window_attention import check_window_args

Tensor = torch.Tensor

FLEX_BLOCK = 128  # flex_attention's default sparse block (Q and KV)
FLEX_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_compiled = None
# Past torch._dynamo's recompile limit (8 by default, per function) dynamo silently runs
# flex_attention eagerly, which materialises the (N, N_k) scores: on an H200 the 9th variant
# (8 test shapes and dtypes, then a no-grad call) fell back and the next 32k-row call asked for
# 64 GiB. The call runs with a higher limit, and fails loudly instead of falling back.
_DYNAMO_LIMITS = {"recompile_limit": 64, "fail_on_recompile_limit_hit": True}


def compiled_flex_attention():
    """torch.compile(flex_attention, dynamic=True), made once (the first call compiles).

    dynamic=True: one compiled kernel serves every sequence length, batch and head count; it
    recompiles for another dtype or grad mode, for N_k = N against N_k ≠ N (duck sizing), and
    B or H switching between 1 and more — a handful per process (see `_DYNAMO_LIMITS`)."""
    global _compiled
    if _compiled is None:
        from torch.nn.attention.flex_attention import flex_attention
        _compiled = torch.compile(flex_attention, dynamic=True)
    return _compiled


def band_mask_mod(kv_offset: int, window: int, n_k: int, device):
    """mask_mod(b, h, q_idx, kv_idx): |q_idx + kv_offset − kv_idx| ≤ W/2 and kv_idx < N_k.
    The three numbers are captured 0-d int tensors (values read by the kernel, not baked into
    it); 0-d so that no size of theirs can be duck-sized together with a block count (a
    length-3 vector equal to 3 KV blocks made a spurious recompile guard)."""
    offset, half, keys = (torch.tensor(x, dtype=torch.int64, device=device)
                          for x in (kv_offset, window // 2, n_k))

    def mask_mod(b, h, q_idx, kv_idx):
        diff = q_idx + offset - kv_idx
        return (diff <= half) & (diff >= -half) & (kv_idx < keys)

    return mask_mod


def _ordered(dense: Tensor) -> tuple[Tensor, Tensor]:
    """(n_q_blocks, n_kv_blocks) bool → (num (1, 1, n_q_blocks) int32, indices (1, 1, n_q_blocks,
    n_kv_blocks) int32, the set blocks first in ascending order) — BlockMask's layout."""
    num = dense.sum(-1, dtype=torch.int32)
    idx = torch.argsort(dense.to(torch.int32), dim=-1, descending=True, stable=True)
    return num[None, None].contiguous(), idx.to(torch.int32)[None, None].contiguous()


def band_block_tiles(n_q: int, n_k: int, window: int, kv_offset: int, device,
                     block: int = FLEX_BLOCK) -> tuple[Tensor, Tensor]:
    """(partial, full) bool (n_q_blocks, n_kv_blocks): which tiles need mask_mod, which need
    none (see the module docstring)."""
    h = window // 2
    qb = torch.arange(-(-n_q // block), device=device)
    kb = torch.arange(-(-n_k // block), device=device)
    q_first = qb * block + kv_offset  # shifted query index i + kv_offset of the tile's rows
    q_last = torch.clamp((qb + 1) * block, max=n_q) - 1 + kv_offset
    k_first = kb * block
    k_last = torch.clamp((kb + 1) * block, max=n_k) - 1
    # some pair within the band: the intervals [q_first − h, q_last + h] and [k_first, k_last]
    # overlap; every pair: the farthest pairs are within h
    some = (k_first[None] <= q_last[:, None] + h) & (k_last[None] >= q_first[:, None] - h)
    every = (k_last[None] - q_first[:, None] <= h) & (q_last[:, None] - k_first[None] <= h)
    inside = (((qb + 1) * block <= n_q)[:, None]) & (((kb + 1) * block <= n_k)[None])
    full = some & every & inside
    return some & ~full, full


@lru_cache(maxsize=64)
def band_block_mask(n_q: int, n_k: int, window: int, kv_offset: int, device: torch.device):
    """The BlockMask of the band for q (…, n_q, d), k (…, n_k, d); cached."""
    from torch.nn.attention.flex_attention import BlockMask

    partial, full = band_block_tiles(n_q, n_k, window, kv_offset, device)
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx,
                                    BLOCK_SIZE=(FLEX_BLOCK, FLEX_BLOCK),
                                    mask_mod=band_mask_mod(kv_offset, window, n_k, device),
                                    seq_lengths=(n_q, n_k))


def _kernel_head_dim(d: int) -> int:
    """The head dim the kernel gets: d if a power of two ≥ 16, else the next one."""
    return max(16, 1 << (d - 1).bit_length())


def window_attention_flex(q: Tensor, k: Tensor, v: Tensor, window: int,
                          kv_offset: int = 0) -> Tensor:
    """`window_attention_reference`'s contract on CUDA: q (B, N, H, d), k/v (B, N_k, H, d)
    (float32, bf16 or fp16) → (B, N, H, d) in the inputs' common dtype."""
    B, N, H, d = q.shape
    n_k = k.shape[1]
    check_window_args(N, n_k, window, kv_offset)
    dt = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    mask = band_block_mask(N, n_k, int(window), int(kv_offset), q.device)
    # (B, H, N, d) views: flex takes any strides; its output follows q's layout
    qt, kt, vt = (t.to(dt).transpose(1, 2) for t in (q, k, v))
    dk = _kernel_head_dim(d)
    if dk != d:
        qt, kt, vt = (torch.nn.functional.pad(t, (0, dk - d)) for t in (qt, kt, vt))
    cfg = torch._dynamo.config
    limits = {k: v for k, v in _DYNAMO_LIMITS.items() if hasattr(cfg, k)}  # older torch: fewer
    with torch.autocast(q.device.type, enabled=False), cfg.patch(limits):
        out = compiled_flex_attention()(qt, kt, vt, block_mask=mask, scale=d ** -0.5)
    return out[..., :d].transpose(1, 2)
