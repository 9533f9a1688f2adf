"""rms_norm: the hand-written gradient (native/triton) against the float64 reference —
output, dx and dweight — on contiguous rows and on a strided view (k of the fused kv
projection), and the fallback for bf16."""

from __future__ import annotations

import pytest
import torch

from hpcds.config.schema import Backend
from hpcds.nn import get_op
from hpcds.nn.layers import RMSNorm
from hpcds.nn.rms_norm import rms_norm_fused, rms_norm_reference


def _grads(fn, x, w, seed=1):
    y = fn(x, w, 1e-6)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed),
                     dtype=torch.float64).to(y.dtype)
    return (y, *torch.autograd.grad(y, (x, w), dy))


@pytest.mark.parametrize("strided", [False, True])
def test_fused_matches_float64_reference(strided):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(2, 23, 2, 3, 8, generator=gen) * 3 + 0.5  # (B, N, kv, H, d)
    x = base[:, :, 1] if strided else base[:, :, 1].contiguous()  # (B, N, H, d)
    assert x.is_contiguous() != strided
    w = (torch.rand(8, generator=gen) + 0.5)
    x32, w32 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    got = _grads(rms_norm_fused, x32, w32)
    want = _grads(rms_norm_reference, x64, w64)
    assert got[0].dtype == torch.float32
    for g, r in zip(got, want):
        torch.testing.assert_close(g.double(), r, rtol=2e-5, atol=2e-5)
    # float64 through the fused path: the reference to rounding
    for g, r in zip(_grads(rms_norm_fused, x64, w64), want):
        torch.testing.assert_close(g, r)


def test_bf16_is_the_reference_and_the_module_dispatches():
    x = torch.randn(3, 5, 8).bfloat16()
    w = torch.ones(8)
    assert torch.equal(rms_norm_fused(x, w, 1e-6), rms_norm_reference(x, w, 1e-6))
    assert get_op("rms_norm", "native") is rms_norm_fused
    assert get_op("rms_norm", "reference") is rms_norm_reference
    assert RMSNorm(8, backend=Backend.native).rms_op is rms_norm_fused
    assert list(RMSNorm(8, backend=Backend.native).state_dict()) == ["weight"]
