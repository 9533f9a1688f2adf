"""modulated_layer_norm, adaLN-Zero identity at init, layers, and the op dispatch."""

from __future__ import annotations

import logging

import pytest
import torch

from hpcds.config.schema import Backend
from hpcds.nn import (GraphAttentionBlock, NoiseEmbedding, WindowAttentionBlock, dispatch,
                      get_op, modulated_layer_norm_reference, register, registered)


def test_modulated_layer_norm_matches_formula():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 8, generator=gen, dtype=torch.float64) * 5 + 2
    scale, shift = (torch.randn(3, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    expected = (x - mean) / torch.sqrt(var + 1e-6) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(modulated_layer_norm_reference(x, scale, shift), expected)
    out = modulated_layer_norm_reference(x.bfloat16(), scale.float(), shift.float())
    assert out.dtype == torch.bfloat16


def _graph_inputs(B=2, n_src=30, n_dst=12, C=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    receivers = torch.arange(n_dst).repeat_interleave(3)
    senders = torch.randint(0, n_src, receivers.shape, generator=gen)
    return (torch.randn(B, n_dst, C, generator=gen), torch.randn(B, n_src, C, generator=gen),
            torch.randn(B, C, generator=gen), senders, receivers,
            torch.randn(receivers.shape[0], 3, generator=gen))


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if torch.all(p == 0):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def test_blocks_are_identity_at_init_and_not_after_perturbing():
    x_dst, x_src, emb, senders, receivers, attr = _graph_inputs()
    g = GraphAttentionBlock(16, 4, 2.0, 16)
    w = WindowAttentionBlock(16, 4, 2.0, 16, window=4)
    assert torch.equal(g(x_dst, x_src, emb, senders, receivers, attr), x_dst)
    assert torch.equal(w(x_src, emb), x_src)
    _perturb(g), _perturb(w)
    assert not torch.allclose(g(x_dst, x_src, emb, senders, receivers, attr), x_dst)
    assert not torch.allclose(w(x_src, emb), x_src)


def test_blocks_gradients_reach_every_parameter():
    x_dst, x_src, emb, senders, receivers, attr = _graph_inputs()
    g = GraphAttentionBlock(16, 4, 2.0, 16)
    w = WindowAttentionBlock(16, 4, 2.0, 16, window=4)
    _perturb(g), _perturb(w)
    y = w(g(x_dst, x_src, emb, senders, receivers, attr), emb)
    y.square().mean().backward()
    for name, p in [*g.named_parameters(), *w.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_blocks_run_under_bf16_autocast():
    x_dst, x_src, emb, senders, receivers, attr = _graph_inputs()
    g = GraphAttentionBlock(16, 4, 2.0, 16)
    w = WindowAttentionBlock(16, 4, 2.0, 16, window=4)
    _perturb(g), _perturb(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = w(g(x_dst, x_src, emb, senders, receivers, attr), emb)
    assert torch.isfinite(y).all()
    ref = w(g(x_dst, x_src, emb, senders, receivers, attr), emb)
    torch.testing.assert_close(y.float(), ref, rtol=0.1, atol=0.1)


def test_noise_embedding_distinguishes_noise_levels():
    emb = NoiseEmbedding(32, 16)
    sigma = torch.tensor([0.002, 0.5, 1.0, 80.0, 1e5])
    out = emb(sigma.log() / 4)
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    assert torch.cdist(out, out).add(torch.eye(5)).min() > 0
    assert emb.double()(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64


def test_dispatch_falls_back_to_reference_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(dispatch, "_warned", set())
    # only the references registered (the fused backends register themselves on import)
    monkeypatch.setattr(dispatch, "_REGISTRY", {op: {"reference": impls["reference"]}
                                                for op, impls in dispatch._REGISTRY.items()})
    with caplog.at_level(logging.WARNING, logger="hpcds.nn.dispatch"):
        for _ in range(2):
            for op in dispatch.OPS:
                assert get_op(op, Backend.triton) is get_op(op, Backend.reference)
    warnings = [r for r in caplog.records if "not registered" in r.getMessage()]
    assert len(warnings) == len(dispatch.OPS)  # once per op, not per call
    assert "triton" in warnings[0].getMessage()
    with pytest.raises(ValueError, match="valid backends"):
        get_op("graph_attention", "cuda")
    with pytest.raises(ValueError, match="ops:"):
        get_op("flash_attention")


def test_dispatch_uses_a_registered_backend_only_when_available(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setitem(dispatch._REGISTRY, "window_attention",
                        dict(dispatch._REGISTRY["window_attention"]))

    def fast(*args, **kwargs):
        raise AssertionError("not called")

    register("window_attention", "native", fast)
    assert get_op("window_attention", "native") is fast
    assert "native" in registered("window_attention")
    register("window_attention", "triton", fast, is_available=lambda: False)
    with caplog.at_level(logging.WARNING, logger="hpcds.nn.dispatch"):
        assert get_op("window_attention", "triton") is get_op("window_attention")
    assert "not available" in caplog.text
    block = WindowAttentionBlock(8, 2, 2.0, 8, window=4, backend=Backend.native)
    assert block.attention_op is fast
