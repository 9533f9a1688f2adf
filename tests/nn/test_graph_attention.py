"""graph_attention reference vs an independent dense float64 softmax attention."""

from __future__ import annotations

import math

import pytest
import torch

from hpcds.nn import get_op, graph_attention_reference


def random_graph(n_src: int, n_dst: int, max_deg: int, gen: torch.Generator):
    """Unique (sender, receiver) pairs sorted by receiver, uneven in-degrees 0..max_deg;
    destinations 0 and n_dst - 1 have none."""
    senders, receivers = [], []
    for i in range(n_dst):
        deg = 0 if i in (0, n_dst - 1) else int(torch.randint(0, max_deg + 1, (1,),
                                                              generator=gen))
        src = torch.randperm(n_src, generator=gen)[:deg]
        senders.append(src)
        receivers.append(torch.full((deg,), i, dtype=torch.int64))
    return torch.cat(senders), torch.cat(receivers)


def dense_attention(q, k, v, bias, senders, receivers, n_dst):
    """(B, N_dst, N_src) logits with -inf off the graph, softmax, matmul; rows without edges
    give 0."""
    B, _, H, d = q.shape
    n_src = k.shape[1]
    logits = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
    mask = torch.zeros(n_dst, n_src, dtype=torch.bool)
    mask[receivers, senders] = True
    bias_dense = torch.zeros(B, H, n_dst, n_src, dtype=q.dtype)
    bias_dense = bias_dense.index_put((torch.arange(B)[:, None, None],
                                       torch.arange(H)[None, :, None],
                                       receivers[None, None, :], senders[None, None, :]),
                                      bias.T.expand(B, H, -1))
    has_edge = mask.any(1)
    logits = torch.where(mask, logits + bias_dense, float("-inf"))
    logits = torch.where(has_edge[:, None], logits, 0.0)  # finite rows for empty nodes
    attn = torch.softmax(logits, -1) * has_edge[:, None]
    return torch.einsum("bhij,bjhd->bihd", attn, v)


def _inputs(B=2, n_src=13, n_dst=11, H=3, d=4, max_deg=6, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    senders, receivers = random_graph(n_src, n_dst, max_deg, gen)
    E = senders.shape[0]
    q = torch.randn(B, n_dst, H, d, generator=gen, dtype=dtype) * 2
    k = torch.randn(B, n_src, H, d, generator=gen, dtype=dtype) * 2
    v = torch.randn(B, n_src, H, d, generator=gen, dtype=dtype)
    bias = torch.randn(E, H, generator=gen, dtype=dtype)
    return q, k, v, bias, senders, receivers, n_dst


def test_graph_attention_matches_dense_and_gradients():
    q, k, v, bias, senders, receivers, n_dst = _inputs()
    counts = torch.bincount(receivers, minlength=n_dst)
    assert counts.min() == 0 and counts.max() > 2 * max(1, int(counts[1:-1].min()))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
    dense_leaves = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
    out = graph_attention_reference(*leaves, senders, receivers, n_dst)
    ref = dense_attention(*dense_leaves, senders, receivers, n_dst)
    assert out.dtype == torch.float64 and out.shape == q.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert torch.all(out[:, 0] == 0) and torch.all(out[:, -1] == 0)  # zero in-degree
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out * w).sum(), leaves)
    dense_grads = torch.autograd.grad((ref * w).sum(), dense_leaves)
    for name, g, gd in zip("q k v edge_bias".split(), grads, dense_grads):
        torch.testing.assert_close(g, gd, rtol=1e-9, atol=1e-11, msg=name)


def test_graph_attention_gradcheck():
    q, k, v, bias, senders, receivers, n_dst = _inputs(B=1, n_src=5, n_dst=4, H=2, d=3,
                                                       max_deg=3, seed=1)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
    assert torch.autograd.gradcheck(
        lambda *a: graph_attention_reference(*a, senders, receivers, n_dst), leaves)


def test_graph_attention_is_stable_for_huge_logits_and_per_sample_bias():
    q, k, v, bias, senders, receivers, n_dst = _inputs(dtype=torch.float32, seed=2)
    out = graph_attention_reference(q * 1e3, k * 1e3, v, bias[None].expand(2, -1, -1) + 500,
                                    senders, receivers, n_dst)
    assert torch.isfinite(out).all()
    ref = dense_attention(q.double() * 1e3, k.double() * 1e3, v.double(),
                          bias.double() + 500, senders, receivers, n_dst)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_graph_attention_low_precision_inputs(dtype):
    """Under autocast q, k, v arrive in bf16: logits/softmax run in float32, out is bf16."""
    q, k, v, bias, senders, receivers, n_dst = _inputs(dtype=torch.float32, seed=3)
    op = get_op("graph_attention")
    out = op(q.to(dtype), k.to(dtype), v.to(dtype), bias, senders, receivers, n_dst)
    assert out.dtype == dtype
    ref = dense_attention(*(t.double() for t in (q, k, v, bias)), senders, receivers, n_dst)
    torch.testing.assert_close(out.double(), ref, rtol=0.05, atol=0.05)
