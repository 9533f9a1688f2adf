"""The fused backends as torch.library custom ops: schema, fake (meta) and autograd
registrations pass torch's own `opcheck`, torch.compile traces forward and backward without a
graph break, and the network's blocks give the reference's results with either backend."""

from __future__ import annotations

import pytest
import torch

from conftest import BACKENDS, fused, random_graph
from hpcds.nn import GraphAttentionBlock, graph_attention_reference
from hpcds.nn.fused_ops import csr_rowptr


def graph_inputs(gen, B=1, n_src=7, n_dst=6, H=2, d=4):
    senders, receivers = random_graph(n_src, n_dst, 3, gen)
    q = torch.randn(B, n_dst, H, d, generator=gen, requires_grad=True)
    k = torch.randn(B, n_src, H, d, generator=gen, requires_grad=True)
    v = torch.randn(B, n_src, H, d, generator=gen, requires_grad=True)
    bias = torch.randn(senders.numel(), H, generator=gen, requires_grad=True)
    return q, k, v, bias, senders, receivers, n_dst


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend, seed):
    fused("graph_attention", backend)  # loads the backend, defining its custom ops
    gen = torch.Generator().manual_seed(seed)
    q, k, v, bias, senders, receivers, n_dst = graph_inputs(gen)
    torch.library.opcheck(getattr(torch.ops.hpcds, f"graph_attention_{backend}").default,
                          (q, k, v, bias, senders, receivers, csr_rowptr(receivers, n_dst)))
    x = torch.randn(2, 5, 6, generator=gen, requires_grad=True)
    scale, shift = (torch.randn(2, 6, generator=gen, requires_grad=True) for _ in range(2))
    torch.library.opcheck(getattr(torch.ops.hpcds, f"modulated_layer_norm_{backend}").default,
                          (x, scale, shift))


def test_torch_compile_traces_through_native(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, bias, senders, receivers, n_dst = graph_inputs(gen, B=2, n_src=9, n_dst=8)
    attn = fused("graph_attention", "native")
    norm = fused("modulated_layer_norm", "native")
    scale = torch.randn(2, 8, generator=gen, requires_grad=True)

    def f(q, k, v, bias, scale):
        a = attn(q, k, v, bias, senders, receivers, n_dst).flatten(2)  # (B, n_dst, H·d)
        return norm(a, scale, torch.zeros_like(scale)).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")  # fullgraph: no breaks
    leaves = (q, k, v, bias, scale)
    loss = compiled(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    ref_loss = f(*leaves)
    ref_grads = torch.autograd.grad(ref_loss, leaves)
    torch.testing.assert_close(loss, ref_loss)
    for g, gr in zip(grads, ref_grads):
        torch.testing.assert_close(g, gr)
    # and the eager fused result is the reference's
    ref_a = graph_attention_reference(q, k, v, bias, senders, receivers, n_dst)
    torch.testing.assert_close(attn(q, k, v, bias, senders, receivers, n_dst), ref_a,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_attention_block_matches_reference(backend, seed):
    """A whole block (modLN, qk-norm, fused kv views, edge bias, gated residuals) with the
    backend's ops equals the reference block, forward and every parameter gradient."""
    torch.manual_seed(seed)
    fused("graph_attention", backend)
    ref_block = GraphAttentionBlock(16, 2, 2.0, 8, backend="reference")
    block = GraphAttentionBlock(16, 2, 2.0, 8, backend=backend)
    torch.nn.init.normal_(ref_block.adaln.proj.weight, std=0.3)  # non-zero gates
    block.load_state_dict(ref_block.state_dict())
    gen = torch.Generator().manual_seed(seed)
    senders, receivers = random_graph(12, 10, 4, gen)
    x_dst, x_src = torch.randn(2, 10, 16), torch.randn(2, 12, 16)
    emb, edge_attr = torch.randn(2, 8), torch.randn(senders.numel(), 3)
    outs = []
    for b in (block, ref_block):
        y = b(x_dst, x_src, emb, senders, receivers, edge_attr)
        y.square().sum().backward()
        outs.append((y, {n: p.grad for n, p in b.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for name, g in outs[0][1].items():
        torch.testing.assert_close(g, outs[1][1][name], rtol=1e-4, atol=1e-5, msg=name)
