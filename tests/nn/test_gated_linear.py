"""gated_linear: the folded path (the gate in the weights, an in-place GEMM) against the
float64 reference, output and every gradient; and the blocks' use of it leaves a block's
function and parameter names unchanged."""

from __future__ import annotations

import pytest
import torch

from hpcds.config.schema import Backend
from hpcds.nn import GraphAttentionBlock, WindowAttentionBlock, get_op
from hpcds.nn.gated_linear import gated_linear_folded, gated_linear_reference


def _inputs(B, N, C_in, C_out, dtype, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C_out, generator=gen, dtype=dtype)
    h = torch.randn(B, N, C_in, generator=gen, dtype=dtype)
    w = torch.randn(C_out, C_in, generator=gen, dtype=dtype) / C_in ** 0.5
    b = torch.randn(C_out, generator=gen, dtype=dtype) if bias else None
    g = torch.randn(B, C_out, generator=gen, dtype=dtype)
    return [t.requires_grad_() if t is not None else None for t in (x, h, w, b, g)]


def _run(fn, args, seed=1):
    out = fn(*args)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).to(out.dtype)  # the same draw for every dtype
    grads = torch.autograd.grad(out, [a for a in args if a is not None], dout)
    return out, grads


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_folded_matches_float64_reference(B, bias):
    args = _inputs(B, 37, 24, 16, torch.float32, bias=bias)
    ref_args = [a.detach().double().requires_grad_() if a is not None else None for a in args]
    out, grads = _run(gated_linear_folded, args)
    ref_out, ref_grads = _run(gated_linear_reference, ref_args)
    assert out.dtype == torch.float32 and out.shape == (B, 37, 16)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-4)
    # float64 in, float64 out: the same function to rounding
    out64, grads64 = _run(gated_linear_folded, ref_args)
    torch.testing.assert_close(out64, ref_out)
    for g, r in zip(grads64, ref_grads):
        torch.testing.assert_close(g, r)


def test_folded_leaves_inputs_alone_and_falls_back_under_autocast():
    x, h, w, b, g = _inputs(1, 9, 8, 8, torch.float32)
    x0 = x.detach().clone()
    gated_linear_folded(x, h, w, b, g).sum().backward()
    assert torch.equal(x.detach(), x0)  # the GEMM accumulates into a fresh tensor
    # under autocast the reference runs (the in-place GEMM would be autocast to bf16 on
    # the float32 residual stream): the same tensor as the reference's
    args = [t.detach() for t in (x, h, w, b, g)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = gated_linear_folded(*args), gated_linear_reference(*args)
    assert out.dtype == ref.dtype == torch.float32 and torch.equal(out, ref)


def test_dispatch_registers_the_folded_path():
    assert get_op("gated_linear", "reference") is gated_linear_reference
    assert get_op("gated_linear", "native") is gated_linear_folded
    assert get_op("gated_linear", "auto") is gated_linear_folded


def _perturbed(block, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return block


@pytest.mark.parametrize("kind", ["window", "graph"])
def test_blocks_with_either_path_agree(kind):
    """A block built for `native` (folded residuals, fused kernels) and one for the reference,
    with the same parameters (same names): the same outputs and parameter gradients."""
    C, B = 16, 2
    if kind == "window":
        make = lambda be: WindowAttentionBlock(C, 2, 2.0, C, window=4, backend=be)  # noqa: E731
        gen = torch.Generator().manual_seed(3)
        args = (torch.randn(B, 20, C, generator=gen), torch.randn(B, C, generator=gen))
    else:
        make = lambda be: GraphAttentionBlock(C, 2, 2.0, C, backend=be)  # noqa: E731
        gen = torch.Generator().manual_seed(3)
        receivers = torch.arange(12).repeat_interleave(3)
        args = (torch.randn(B, 12, C, generator=gen), torch.randn(B, 30, C, generator=gen),
                torch.randn(B, C, generator=gen),
                torch.randint(0, 30, receivers.shape, generator=gen), receivers,
                torch.randn(receivers.shape[0], 3, generator=gen))
    ref = _perturbed(make(Backend.reference)).double()
    fast = make(Backend.native).double()
    assert fast.residual_op is gated_linear_folded
    fast.load_state_dict(ref.state_dict())  # the same parameter names
    args = [a.double() if a.is_floating_point() else a for a in args]
    outs = [blk(*args) for blk in (ref, fast)]
    torch.testing.assert_close(outs[1], outs[0])
    for blk, out in zip((ref, fast), outs):
        out.square().sum().backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
