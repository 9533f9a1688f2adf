"""Activation checkpointing of every block (encoder, processor, decoder, refiner): the same
output and gradients as without (float64, tight tolerance), every block recomputed once in
backward, nested with EdgeBias's own chunk checkpoints, and off without grad."""

from __future__ import annotations

import copy

import pytest
import torch

from hpcds.config.load import load_config
from hpcds.grids import make_grid
from hpcds.models import DownscalerNet, build_model_graphs
from hpcds.nn import GraphAttentionBlock, WindowAttentionBlock

V, F = 3, 4
OVERRIDES = ["grid.hr.name=1.0/1.0", "model.hidden_grid.name=1.5/1.5", "model.hidden_dim=16",
             "model.num_heads=2", "model.window=8", "model.noise_embedding_dim=8",
             "model.processor_layers=2", "model.refiner_layers=2"]
BLOCKS = ["encoder", "processor.0", "processor.1", "decoder", "refiner.0", "refiner.1"]


@pytest.fixture(scope="module")
def nets():
    """(model without checkpointing, the same weights with it, float64 inputs)."""
    cfg = load_config("tiny", OVERRIDES)
    graphs = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs).double()
    with torch.no_grad():  # the zero-initialised gates and head: every block contributes
        for p in net.parameters():
            if torch.all(p == 0):
                p.add_(0.1 * torch.randn_like(p))
    net_ckpt = copy.deepcopy(net)
    net_ckpt.activation_checkpointing = True
    gen = torch.Generator().manual_seed(1)
    n = graphs.n_hr
    inputs = (torch.randn(2, n, V, generator=gen, dtype=torch.float64),
              torch.randn(2, n, V, generator=gen, dtype=torch.float64),
              torch.randn(2, n, F, generator=gen, dtype=torch.float64),
              torch.randn(2, generator=gen, dtype=torch.float64))
    return net, net_ckpt, inputs


def _forward_backward(net, inputs):
    """Output, input gradients, parameter gradients, and how often each block started."""
    calls = dict.fromkeys(BLOCKS, 0)
    modules = dict(net.named_modules())
    # pre-hooks: a recompute stops once the saved tensors are back (non-reentrant early stop),
    # before the block's forward hooks would run
    handles = [modules[name].register_forward_pre_hook(
        lambda m, a, name=name: calls.__setitem__(name, calls[name] + 1)) for name in BLOCKS]
    net.zero_grad(set_to_none=True)
    x, cond, forcings = (t.clone().requires_grad_(True) for t in inputs[:3])
    w = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view_as(x)
    try:
        out = net(x, cond, forcings, inputs[3])
        (out * w).sum().backward()
    finally:
        for h in handles:
            h.remove()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    return out.detach(), (x.grad, cond.grad, forcings.grad), grads, calls


def _assert_same(a, b):
    out_a, in_a, par_a, _ = a
    out_b, in_b, par_b, _ = b
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-14)
    for ga, gb in zip(in_a, in_b):
        torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-13)
    assert par_a.keys() == par_b.keys()
    for k in par_a:
        torch.testing.assert_close(par_b[k], par_a[k], rtol=1e-10, atol=1e-13, msg=k)


def test_blocks_are_graph_and_window_blocks(nets):
    net, _, _ = nets
    modules = dict(net.named_modules())
    assert all(isinstance(modules[b], (GraphAttentionBlock, WindowAttentionBlock))
               for b in BLOCKS)
    assert sum(isinstance(m, (GraphAttentionBlock, WindowAttentionBlock))
               for m in net.modules()) == len(BLOCKS)


def test_checkpointing_gives_the_same_output_and_gradients(nets):
    net, net_ckpt, inputs = nets
    plain = _forward_backward(net, inputs)
    ckpt = _forward_backward(net_ckpt, inputs)
    _assert_same(plain, ckpt)
    assert all(g.abs().sum() > 0 for g in plain[2].values())
    assert plain[3] == dict.fromkeys(BLOCKS, 1)
    # every block (encoder, processor, decoder, refiner) is recomputed once in backward
    assert ckpt[3] == dict.fromkeys(BLOCKS, 2)


def test_nested_with_edge_bias_chunk_checkpoints(nets):
    """EdgeBias checkpoints its own pieces inside a checkpointed block (nested non-reentrant
    checkpoints): still the same gradients."""
    net, net_ckpt, inputs = nets
    plain = _forward_backward(net, inputs)
    nested = copy.deepcopy(net_ckpt)
    for m in nested.modules():
        if isinstance(m, GraphAttentionBlock):
            m.edge_bias.chunk = 97  # several pieces per graph
    assert all(m.edge_bias.chunk < nested.refiner_senders.numel() for m in nested.modules()
               if isinstance(m, GraphAttentionBlock))
    _assert_same(plain, _forward_backward(nested, inputs))


def test_no_checkpointing_without_grad(nets):
    net, net_ckpt, inputs = nets
    calls = []
    handle = net_ckpt.decoder.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            out = net_ckpt(*inputs)
    finally:
        handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(out, net(*inputs), rtol=0, atol=0)
    assert calls == [1] and not out.requires_grad
