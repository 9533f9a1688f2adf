"""Compiled (not interpreted) Triton and CUDA kernels on the GPU against the float64 reference:
graph attention and the modulated LayerNorm, outputs and every gradient, float32 and bf16,
head dims and channel counts that are not powers of two, zero in-degree destinations."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_matches, random_graph
from hpcds.nn import graph_attention_reference, kernels, modulated_layer_norm_reference

pytestmark = pytest.mark.gpu

BACKENDS = ("triton", "native")
DTYPES = (torch.float32, torch.bfloat16)


def fused(op: str, backend: str):
    assert getattr(kernels, f"{backend}_available")(), f"{backend} kernels did not load on the GPU"
    return getattr(kernels, f"{op}_{backend}")


def _run(fn, leaves, extra, w):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves, *extra)
    return out, torch.autograd.grad((out * w.to(out.dtype)).sum(), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("H,d", [(4, 16), (3, 24), (2, 5), (8, 64)])
def test_graph_attention_matches_float64_reference(backend, dtype, H, d, device):
    gen = torch.Generator().manual_seed(1000 * H + d)
    B, n_src, n_dst = 2, 700, 900
    senders, receivers = random_graph(n_src, n_dst, 24, gen)
    E = senders.numel()
    q = torch.randn(B, n_dst, H, d, generator=gen) * 2  # logits of several units
    k = torch.randn(B, n_src, H, d, generator=gen) * 2
    v = torch.randn(B, n_src, H, d, generator=gen)
    bias = torch.randn(E, H, generator=gen)
    w = torch.randn(B, n_dst, H, d, generator=gen, dtype=torch.float64).to(device)
    leaves = [t.to(device, dtype) for t in (q, k, v, bias)]
    graph = (senders.to(device), receivers.to(device), n_dst)
    out, grads = _run(fused("graph_attention", backend), leaves, graph, w)
    ref, ref_grads = _run(graph_attention_reference, [t.double() for t in leaves], graph, w)
    assert out.device.type == "cuda"
    assert_matches(out, ref, dtype, "out")
    assert torch.all(out[:, 0] == 0) and torch.all(out[:, -1] == 0)  # zero in-degree → 0
    for name, g, gr in zip(("q", "k", "v", "edge_bias"), grads, ref_grads):
        assert_matches(g, gr, dtype, f"d{name}")
    assert torch.all(grads[1][:, -1] == 0) and torch.all(grads[2][:, -1] == 0)  # no out-edges


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C", [5, 48, 520, 512])
def test_layer_norm_matches_float64_reference(backend, dtype, C, device):
    gen = torch.Generator().manual_seed(C)
    B, N = 2, 3001  # several row chunks per sample, a ragged last one
    x = torch.randn(B, N, C, generator=gen) * 3 + 1
    scale = torch.randn(B, C, generator=gen) * 0.5
    shift = torch.randn(B, C, generator=gen)
    w = torch.randn(B, N, C, generator=gen, dtype=torch.float64).to(device)
    leaves = [t.to(device, dtype) for t in (x, scale, shift)]
    y, grads = _run(fused("modulated_layer_norm", backend), leaves, (), w)
    ref, ref_grads = _run(modulated_layer_norm_reference, [t.double() for t in leaves], (), w)
    assert_matches(y, ref, dtype, "y")
    for name, g, gr in zip(("x", "scale", "shift"), grads, ref_grads):
        assert_matches(g, gr, dtype, f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_attention_float64_to_rounding(backend, device):
    """float64 in and accumulated: agreement to rounding, so no formula error hides inside the
    float32 tolerance."""
    gen = torch.Generator().manual_seed(7)
    senders, receivers = random_graph(300, 400, 12, gen)
    leaves = [torch.randn(2, n, 4, 16, generator=gen, dtype=torch.float64).to(device)
              for n in (400, 300, 300)] + [torch.randn(senders.numel(), 4, generator=gen,
                                                       dtype=torch.float64).to(device)]
    graph = (senders.to(device), receivers.to(device), 400)
    w = torch.randn(2, 400, 4, 16, generator=gen, dtype=torch.float64).to(device)
    out, grads = _run(fused("graph_attention", backend), leaves, graph, w)
    ref, ref_grads = _run(graph_attention_reference, leaves, graph, w)
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-12)
    for g, gr in zip(grads, ref_grads):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-11)
