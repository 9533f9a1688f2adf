"""A graph-attention block run on pieces of its destination rows (model.graph_block_rows)
equals the block run on all rows at once: output and every gradient, float64, with uneven
pieces, destinations without edges, and a piece boundary inside no edge range; without
autograd too."""

from __future__ import annotations

import copy

import pytest
import torch

from hpcds.nn import GraphAttentionBlock


def _graph(n_src: int, n_dst: int, gen: torch.Generator):
    deg = torch.randint(0, 6, (n_dst,), generator=gen)
    deg[[3, 4, 17]] = 0  # destinations with no incoming edge
    receivers = torch.repeat_interleave(torch.arange(n_dst), deg)
    senders = torch.randint(0, n_src, (receivers.numel(),), generator=gen)
    attr = torch.randn(receivers.numel(), 3, generator=gen, dtype=torch.float64)
    return senders.to(torch.int32), receivers.to(torch.int32), attr


@pytest.mark.parametrize("rows", [1, 7, 40])
def test_pieces_equal_all_rows(rows):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    whole = GraphAttentionBlock(16, 2, 2.0, 8).double()
    for p in whole.adaln.parameters():  # adaLN-Zero starts at the identity: perturb it
        torch.nn.init.normal_(p, std=0.3)
    pieces = copy.deepcopy(whole)
    pieces.rows = rows
    n_src, n_dst = 50, 45
    senders, receivers, attr = _graph(n_src, n_dst, gen)
    x_dst = torch.randn(2, n_dst, 16, generator=gen, dtype=torch.float64)
    x_src = torch.randn(2, n_src, 16, generator=gen, dtype=torch.float64)
    emb = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(2, n_dst, 16, generator=gen, dtype=torch.float64)

    results = []
    for block in (whole, pieces):
        inputs = [t.clone().requires_grad_(True) for t in (x_dst, x_src, emb)]
        out = block(inputs[0], inputs[1], inputs[2], senders, receivers, attr)
        (out * w).sum().backward()
        results.append((out.detach(), [t.grad for t in inputs],
                        {k: p.grad for k, p in block.named_parameters()}))
        with torch.no_grad():
            assert torch.allclose(block(x_dst, x_src, emb, senders, receivers, attr), out,
                                  rtol=1e-12, atol=1e-12)
    (out_a, in_a, par_a), (out_b, in_b, par_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
    for a, b in zip(in_a, in_b):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for k in par_a:
        torch.testing.assert_close(par_b[k], par_a[k], rtol=1e-10, atol=1e-12)
    n_pieces = len(pieces._pieces[1])
    assert n_pieces == -(-n_dst // rows) and pieces._pieces[1][-1][3] == receivers.numel()
