"""window_attention reference vs dense banded attention; halo contract; O(N·W) memory."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hpcds.nn import window_attention_reference


def dense_band_attention(q, k, v, window, kv_offset=0):
    """Full (N, N_k) logits with -inf outside |i + kv_offset − j| ≤ W/2, softmax, matmul."""
    N, n_k, d = q.shape[1], k.shape[1], q.shape[-1]
    i = torch.arange(N)[:, None] + kv_offset
    j = torch.arange(n_k)[None, :]
    band = (i - j).abs() <= window // 2
    logits = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
    attn = torch.softmax(logits.masked_fill(~band, float("-inf")), -1)
    return torch.einsum("bhij,bjhd->bihd", attn, v)


def _qkv(B, N, n_k, H, d, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, H, d, generator=gen, dtype=dtype) * 2,
            torch.randn(B, n_k, H, d, generator=gen, dtype=dtype) * 2,
            torch.randn(B, n_k, H, d, generator=gen, dtype=dtype))


@pytest.mark.parametrize("N,window", [(37, 8), (40, 8), (5, 16), (1, 4), (16, 2), (9, 64)])
def test_window_attention_matches_dense_with_gradients(N, window):
    q, k, v = _qkv(2, N, N, 3, 4, seed=N + window)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    dense_leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = window_attention_reference(*leaves, window)
    ref = dense_band_attention(*dense_leaves, window)
    assert out.shape == q.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out * w).sum(), leaves)
    dense_grads = torch.autograd.grad((ref * w).sum(), dense_leaves)
    for name, g, gd in zip("qkv", grads, dense_grads):
        torch.testing.assert_close(g, gd, rtol=1e-9, atol=1e-11, msg=name)


def test_window_attention_gradcheck():
    q, k, v = _qkv(1, 7, 7, 2, 3, seed=0)
    leaves = [t.requires_grad_(True) for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda *a: window_attention_reference(*a, 4), leaves)


@pytest.mark.parametrize("shards", [[0, 11, 12, 30, 45], [0, 3, 45], [0, 45]])
def test_sharded_with_halo_equals_unsharded(shards):
    """The halo contract: a shard [a, b) with keys/values [a − h_l, b + h_r), h ≤ W/2
    clipped at the ends, and kv_offset = h_l reproduces rows a..b of the full result."""
    window, N = 8, 45
    q, k, v = _qkv(2, N, N, 2, 4, seed=7)
    full = window_attention_reference(q, k, v, window)
    for a, b in zip(shards[:-1], shards[1:]):
        lo, hi = max(0, a - window // 2), min(N, b + window // 2)
        part = window_attention_reference(q[:, a:b], k[:, lo:hi], v[:, lo:hi], window,
                                          kv_offset=a - lo)
        torch.testing.assert_close(part, full[:, a:b], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="keys must cover"):
        window_attention_reference(q, k[:, :-1], v[:, :-1], window)


def test_window_attention_bf16_inputs():
    q, k, v = _qkv(1, 30, 30, 2, 8, seed=3, dtype=torch.float32)
    out = window_attention_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), 8)
    assert out.dtype == torch.bfloat16
    ref = dense_band_attention(q.double(), k.double(), v.double(), 8)
    torch.testing.assert_close(out.double(), ref, rtol=0.05, atol=0.05)


class LargestTensor(TorchDispatchMode):
    """Records the largest numel of any tensor an ATen op produces (forward AND backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_window_attention_memory_is_linear_in_n():
    B, N, H, d, window = 1, 20_000, 2, 8, 16
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, N, N, H, d, seed=0,
                                                    dtype=torch.float32))
    with LargestTensor() as rec:
        out = window_attention_reference(q, k, v, window)
        out.square().sum().backward()
    # logits are B·H·N·(3W/2); gathered keys 3·B·N·H·d. N² would be 4e8.
    assert rec.largest <= 2 * B * N * H * max(window, 3 * d), rec.largest

    # the recorder does catch an O(N²) implementation
    small = [t.detach()[:, :2000] for t in (q, k, v)]
    with LargestTensor() as rec_dense:
        dense_band_attention(*small, window)
    assert rec_dense.largest >= 2000 * 2000
