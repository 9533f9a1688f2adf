"""Fused modulated LayerNorm (triton under the interpreter, native CPU) against the reference:
output and the gradients of x, scale and shift, with several row blocks per sample so the
per-block partial sums of dscale/dshift are reduced."""

from __future__ import annotations

import pytest
import torch

from conftest import BACKENDS, fused
from hpcds.nn import modulated_layer_norm_reference
from hpcds.nn import native_kernels


def run(fn, leaves, w):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    y = fn(*leaves)
    return y, torch.autograd.grad((y * w.to(y.dtype)).sum(), leaves)


def make_inputs(gen, B, N, C, dtype):
    x = torch.randn(B, N, C, generator=gen, dtype=dtype) * 3 + 1  # a non-zero mean
    scale = torch.randn(B, C, generator=gen, dtype=dtype) * 0.5
    shift = torch.randn(B, C, generator=gen, dtype=dtype)
    return [x, scale, shift], torch.randn(B, N, C, generator=gen, dtype=torch.float64)


@pytest.fixture
def small_native_chunks(monkeypatch):
    """Several partial rows per sample in the native backward too (triton: 32 rows/block)."""
    monkeypatch.setattr(native_kernels, "LN_ROWS_PER_CHUNK", 8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("C", [48, 5])
def test_matches_reference_float32(backend, C, seed, small_native_chunks):
    gen = torch.Generator().manual_seed(seed)
    leaves, w = make_inputs(gen, 2, 37, C, torch.float32)
    y, grads = run(fused("modulated_layer_norm", backend), leaves, w)
    ref, ref_grads = run(modulated_layer_norm_reference, [t.double() for t in leaves], w)
    assert y.dtype == torch.float32 and y.shape == leaves[0].shape
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)
    for name, g, gr in zip(("x", "scale", "shift"), grads, ref_grads):
        assert g.shape == gr.shape, name
        torch.testing.assert_close(g.double(), gr, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference_float64(backend, seed, small_native_chunks):
    gen = torch.Generator().manual_seed(seed)
    leaves, w = make_inputs(gen, 2, 21, 24, torch.float64)
    y, grads = run(fused("modulated_layer_norm", backend), leaves, w)
    ref, ref_grads = run(modulated_layer_norm_reference, leaves, w)
    torch.testing.assert_close(y, ref, rtol=1e-11, atol=1e-12)
    for name, g, gr in zip(("x", "scale", "shift"), grads, ref_grads):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-11, msg=name)
