"""Sliding-window attention over a sequence (the processor's SFC-ordered hidden nodes).

Query i attends to key j iff |(i + kv_offset) − j| ≤ W/2 and 0 ≤ j < N_k, i.e. to the W+1
keys centred on it, clipped at the sequence ends. Keys/values may be LONGER than the
queries: a model-parallel shard appends a halo of up to W/2 tokens from each neighbour,

    k, v = [left halo (kv_offset tokens) | own N tokens | right halo]   (N_k tokens)

and passes kv_offset = length of its left halo (0 on the first shard). Then the shard's output
equals the corresponding rows of the unsharded output exactly. Without a halo kv_offset = 0
and N_k = N.

Memory O(N·W), never O(N²): queries are cut into blocks of b = W/2 tokens; block t (queries
t·b … t·b+b−1) can only reach keys t·b + kv_offset − b … t·b + kv_offset + 2b − 1, a span of
3b, so each block attends to a gathered (3b)-key slab under a band mask. Logits
(B, n_blocks, H, b, 3b) = 1.5·N·W·H floats. N need not be a multiple of b, and N < W works
(one partial block). Logits and softmax are float32 (float64 for float64 inputs) also when
q, k, v are bf16 (autocast). This is the reference; the fused backends (`native`, `triton`:
hpcds/nn/window_attention_backends.py) keep O(N·C) for backward instead of these logits.
"""

from __future__ import annotations

import math

import torch

from hpcds.nn.dispatch import register

_MASKED = -1e30  # finite: a padded query row with every key masked stays NaN-free


def check_window_args(n_q: int, n_k: int, window: int, kv_offset: int) -> None:
    """The contract every backend checks: an even window ≥ 2, keys covering the queries."""
    if window < 2 or window % 2:
        raise ValueError(f"window must be an even number >= 2, got {window}")
    if kv_offset < 0 or n_q + kv_offset > n_k:
        raise ValueError(f"keys must cover the queries: kv_offset={kv_offset}, "
                         f"n_q={n_q}, n_k={n_k}")


def band_layout(n_q: int, n_k: int, window: int, kv_offset: int, device=None
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(key_index (n_blocks, 3b) int64 clamped into [0, n_k), valid (n_blocks, b, 3b) bool,
    b) for `n_q` queries: which key each slab slot holds and which (query, slot) pairs attend.
    Built from Python ints only (no host sync)."""
    check_window_args(n_q, n_k, window, kv_offset)
    b = window // 2
    n_blocks = (n_q + b - 1) // b
    starts = torch.arange(n_blocks, device=device) * b + (kv_offset - b)  # first key of slab
    key = starts[:, None] + torch.arange(3 * b, device=device)  # (n_blocks, 3b)
    # j − i' = (slab start + slot) − (block start + row + kv_offset) = slot − row − b: the
    # same (b, 3b) band in every block, so no (n_blocks, b, 3b) int64 offsets are made
    # (1.3 GB for an O2560 shard's hidden rows at W = 64)
    rel = torch.arange(3 * b, device=device)[None, :] - torch.arange(b, device=device)[:, None] - b
    valid = (rel.abs() <= b)[None] & ((key >= 0) & (key < n_k))[:, None, :]  # (n_blocks, b, 3b)
    return key.clamp(0, n_k - 1), valid, b


def window_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               window: int, kv_offset: int = 0) -> torch.Tensor:
    """q (B, N, H, d), k/v (B, N_k, H, d) with N_k ≥ N + kv_offset → (B, N, H, d)."""
    B, N, H, d = q.shape
    n_k = k.shape[1]
    key, valid, b = band_layout(N, n_k, window, kv_offset, q.device)
    n_blocks = key.shape[0]
    pad = n_blocks * b - N
    qb = torch.nn.functional.pad(q, (0, 0, 0, 0, 0, pad)).view(B, n_blocks, b, H, d)
    flat = key.reshape(-1)
    kb = k.index_select(1, flat).view(B, n_blocks, 3 * b, H, d)
    vb = v.index_select(1, flat).view(B, n_blocks, 3 * b, H, d)

    acc = torch.promote_types(q.dtype, torch.float32)  # float32 (or float64) softmax
    logits = torch.einsum("bnqhd,bnkhd->bnhqk", qb, kb).to(acc) * (1.0 / math.sqrt(d))
    logits = logits.masked_fill(~valid[None, :, None], _MASKED)  # (B, n_blocks, H, b, 3b)
    attn = torch.softmax(logits, dim=-1).to(v.dtype)
    out = torch.einsum("bnhqk,bnkhd->bnqhd", attn, vb)  # (B, n_blocks, b, H, d)
    return out.reshape(B, n_blocks * b, H, d)[:, :N]


register("window_attention", "reference", window_attention_reference)
