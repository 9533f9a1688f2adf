"""EdgeBias in checkpointed pieces: the same bias and the same gradients as in one piece."""

from __future__ import annotations

import copy

import torch

from hpcds.nn import EdgeBias


def test_chunked_edge_bias_matches_whole():
    torch.manual_seed(0)
    whole = EdgeBias(3, 2, hidden=8)
    chunked = copy.deepcopy(whole)
    chunked.chunk = 7  # 50 edges: 8 pieces, the last one short
    attr = torch.randn(50, 3, dtype=torch.float64)
    whole.double()
    chunked.double()
    weights = torch.randn(50, 2, dtype=torch.float64)
    for net in (whole, chunked):
        x = attr.clone().requires_grad_(True)
        (net(x) * weights).sum().backward()
        net.x_grad = x.grad
    torch.testing.assert_close(chunked(attr), whole(attr), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked.x_grad, whole.x_grad, rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(whole.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12, msg=name)
    with torch.no_grad():  # no autograd: plain pieces
        torch.testing.assert_close(chunked(attr), whole(attr), rtol=1e-12, atol=1e-12)
    assert EdgeBias(3, 2).chunk == EdgeBias.CHUNK
