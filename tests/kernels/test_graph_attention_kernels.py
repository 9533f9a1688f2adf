"""Fused graph attention (triton under the interpreter, native CPU) against the reference:
output and the gradients of q, k, v and the edge bias, in float32 against a float64 reference,
with uneven degrees (zero in-degree destinations, a source without edges) and >= 2 heads."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import BACKENDS, fused, random_graph
from hpcds.nn import dispatch, get_op, graph_attention_reference
from hpcds.nn import kernels as kernel_registry


def make_inputs(gen, B, n_src, n_dst, H, d, max_deg, dtype, per_sample_bias=False):
    senders, receivers = random_graph(n_src, n_dst, max_deg, gen)
    E = senders.numel()
    # scaled up so the softmax is far from uniform (logits of several units)
    q = torch.randn(B, n_dst, H, d, generator=gen, dtype=dtype) * 2
    k = torch.randn(B, n_src, H, d, generator=gen, dtype=dtype) * 2
    v = torch.randn(B, n_src, H, d, generator=gen, dtype=dtype)
    bias = torch.randn(*((B,) if per_sample_bias else ()), E, H, generator=gen, dtype=dtype)
    return [q, k, v, bias], senders, receivers, n_dst


def run(fn, leaves, senders, receivers, n_dst, w):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves, senders, receivers, n_dst)
    grads = torch.autograd.grad((out * w.to(out.dtype)).sum(), leaves)
    return out, grads


CASES = {  # name: (B, n_src, n_dst, H, d, max_deg, per-sample bias)
    "d16-shared-bias": (2, 14, 20, 2, 16, 7, False),   # a compile-time head dim in C++
    "d5-per-sample-bias": (2, 11, 18, 3, 5, 6, True),  # the runtime head dim, padded tiles
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_float32(backend, case, seed):
    B, n_src, n_dst, H, d, max_deg, per_sample = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    leaves, senders, receivers, n_dst = make_inputs(gen, B, n_src, n_dst, H, d, max_deg,
                                                    torch.float32, per_sample)
    counts = torch.bincount(receivers, minlength=n_dst)
    assert counts[0] == 0 and counts.max() >= 2  # uneven, with zero in-degree
    w = torch.randn(B, n_dst, H, d, generator=gen, dtype=torch.float64)
    out, grads = run(fused("graph_attention", backend), leaves, senders, receivers, n_dst, w)
    ref, ref_grads = run(graph_attention_reference, [t.double() for t in leaves], senders,
                         receivers, n_dst, w)
    assert out.dtype == torch.float32 and out.shape == (B, n_dst, H, d)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    assert torch.all(out[:, 0] == 0)  # zero in-degree → 0
    for name, g, gr in zip(("q", "k", "v", "edge_bias"), grads, ref_grads):
        assert g.shape == gr.shape and g.dtype == torch.float32, name
        torch.testing.assert_close(g.double(), gr, rtol=1e-4, atol=1e-4, msg=name)
    assert torch.all(grads[1][:, -1] == 0) and torch.all(grads[2][:, -1] == 0)  # no out-edges


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference_float64(backend, seed):
    """float64 in, float64 accumulation: agreement to rounding, so a wrong formula cannot hide
    inside the float32 tolerance."""
    gen = torch.Generator().manual_seed(seed)
    leaves, senders, receivers, n_dst = make_inputs(gen, 2, 9, 12, 2, 16, 5, torch.float64)
    w = torch.randn(2, n_dst, 2, 16, generator=gen, dtype=torch.float64)
    out, grads = run(fused("graph_attention", backend), leaves, senders, receivers, n_dst, w)
    ref, ref_grads = run(graph_attention_reference, leaves, senders, receivers, n_dst, w)
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-12)
    for name, g, gr in zip(("q", "k", "v", "edge_bias"), grads, ref_grads):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-11, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_kv_views(backend, seed):
    """k and v as views of one fused kv projection (node stride 2·H·d), as the blocks make them."""
    gen = torch.Generator().manual_seed(seed)
    B, n_src, n_dst, H, d = 2, 10, 12, 2, 8
    senders, receivers = random_graph(n_src, n_dst, 4, gen)
    q = torch.randn(B, n_dst, H, d, generator=gen)
    kv = torch.randn(B, n_src, 2, H, d, generator=gen)
    k, v = kv.unbind(2)
    assert not k.is_contiguous()
    bias = torch.randn(senders.numel(), H, generator=gen)
    out = fused("graph_attention", backend)(q, k, v, bias, senders, receivers, n_dst)
    ref = graph_attention_reference(q, k, v, bias, senders, receivers, n_dst)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_native_bf16_inputs_compute_in_float32(seed):
    gen = torch.Generator().manual_seed(seed)
    leaves, senders, receivers, n_dst = make_inputs(gen, 1, 8, 10, 2, 16, 4, torch.float32)
    leaves = [t.bfloat16() for t in leaves]
    out = fused("graph_attention", "native")(*leaves, senders, receivers, n_dst)
    ref = graph_attention_reference(*leaves, senders, receivers, n_dst)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_native_threads_are_deterministic(seed):
    """OpenMP over destinations with 2 threads gives bit-identical results to 1 thread: every
    output row (and every dk/dv row, via the source-sorted pass) has one writer."""
    gen = torch.Generator().manual_seed(seed)
    leaves, senders, receivers, n_dst = make_inputs(gen, 2, 60, 300, 2, 16, 6, torch.float32)
    w = torch.randn(2, n_dst, 2, 16, generator=gen, dtype=torch.float64)
    fn = fused("graph_attention", "native")
    out1, g1 = run(fn, leaves, senders, receivers, n_dst, w)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out2, g2 = run(fn, leaves, senders, receivers, n_dst, w)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out1, out2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_native_rejects_bad_graphs():
    fn = fused("graph_attention", "native")
    q, k, v = torch.randn(1, 3, 2, 4), torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4)
    bias = torch.randn(2, 2)
    with pytest.raises(IndexError, match="outside"):
        fn(q, k, v, bias, torch.tensor([0, 5]), torch.tensor([0, 1]), 3)  # sender 5 ≥ 2
    with pytest.raises(IndexError, match="sorted"):
        fn(q, k, v, bias, torch.tensor([0, 1]), torch.tensor([2, 1]), 3)
    with pytest.raises(IndexError, match="rowptr"):
        fn(q, k, v, bias, torch.tensor([0, 1]), torch.tensor([0, 7]), 3)  # receiver 7 ≥ 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatch_selects_backend(backend):
    assert get_op("graph_attention", backend) is getattr(kernel_registry,
                                                         f"graph_attention_{backend}")
    assert get_op("modulated_layer_norm", backend) is getattr(
        kernel_registry, f"modulated_layer_norm_{backend}")


def test_dispatch_falls_back_with_a_log_when_unavailable(monkeypatch, caplog):
    monkeypatch.setitem(kernel_registry._LOADED, "triton", None)  # as if it failed to load
    monkeypatch.setattr(dispatch, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="hpcds.nn.dispatch"):
        assert get_op("graph_attention", "triton") is graph_attention_reference
    assert "not available" in caplog.text and "triton" in caplog.text


def test_auto_picks_the_fastest_available_and_logs_it(monkeypatch, caplog):
    """On a CPU `auto` is the native kernels where they load (not the Triton interpreter),
    the reference where they do not, and the reference for an op no fast backend has."""
    monkeypatch.setattr(dispatch, "_warned", set())
    with caplog.at_level(logging.INFO, logger="hpcds.nn.dispatch"):
        assert get_op("graph_attention", "auto") is kernel_registry.graph_attention_native
        assert get_op("modulated_layer_norm", "auto") is \
            kernel_registry.modulated_layer_norm_native
    assert "model.backend=auto uses native" in caplog.text
    monkeypatch.setitem(kernel_registry._LOADED, "native", None)  # as if it failed to load
    monkeypatch.setattr(dispatch, "_warned", set())
    assert get_op("graph_attention", "auto") is graph_attention_reference
    monkeypatch.setattr(dispatch, "fast_backends", lambda: ("triton", "native"))  # "a GPU"
    monkeypatch.setattr(dispatch, "_warned", set())
    assert get_op("graph_attention", "auto") is kernel_registry.graph_attention_triton
