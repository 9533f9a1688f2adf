"""Sparse multi-head attention along the edges of a bipartite graph (encoder, decoder).

    out[b, i, h] = Σ_{e: receivers[e] = i} α[b, e, h] · v[b, senders[e], h]
    α[b, e, h]   = softmax over the incoming edges of i of
                   ( q[b, i, h] · k[b, senders[e], h] / √d + edge_bias[e, h] )

Batch convention: node tensors carry a leading batch dim (B, N, H, d); the graph (senders,
receivers, edge_bias) is shared by every sample of the batch (edge_bias may also be given
per sample, (B, E, H)). A destination with no incoming edge gets 0.

Sharding: the op only ever sees explicit index tensors. A model-parallel shard passes its
local destinations (receivers rebased to 0..n_dst-1) and source rows that already include
the halo rows that its senders point to; nothing here knows about ranks.

The reference materialises per-edge tensors, memory O(B·E·H·d). Logits, the softmax and its
normaliser are float32 (float64 for float64 inputs) also when q, k, v are bf16 (autocast);
the result has v's dtype. No host synchronisation: `n_dst` is a Python int and the max is a scatter.
"""

from __future__ import annotations

import math

import torch

from hpcds.nn.dispatch import register


def graph_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              edge_bias: torch.Tensor, senders: torch.Tensor,
                              receivers: torch.Tensor, n_dst: int) -> torch.Tensor:
    """q (B, n_dst, H, d), k/v (B, N_src, H, d), edge_bias (E, H) or (B, E, H),
    senders/receivers (E,) int32 or int64 (receivers non-decreasing; the reference does not
    need it but fused kernels do) → (B, n_dst, H, d)."""
    B, _, H, d = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
    qe = q.index_select(1, receivers)  # (B, E, H, d)
    ke = k.index_select(1, senders)  # (B, E, H, d)
    logits = (qe * ke).sum(-1, dtype=acc) * (1.0 / math.sqrt(d))
    logits = logits + edge_bias.to(acc)  # (B, E, H)

    # segment softmax: subtract each destination's max (a constant per segment, so it is
    # detached: softmax does not depend on it), exponentiate, normalise by the segment sum
    # scatter_reduce takes int64 indices only (index_select/index_add take int32 too): an
    # (E,) int64 copy of an int32 graph, small next to the (B, E, H, d) tensors made here
    idx = receivers.long().view(1, -1, 1).expand(B, -1, H)
    seg_max = torch.full((B, n_dst, H), float("-inf"), dtype=acc, device=q.device)
    seg_max = seg_max.scatter_reduce(1, idx, logits.detach(), "amax", include_self=True)
    p = torch.exp(logits - seg_max.index_select(1, receivers))  # (B, E, H), in (0, 1]
    denom = torch.zeros((B, n_dst, H), dtype=acc, device=q.device)
    denom = denom.index_add(1, receivers, p)  # (B, n_dst, H); 0 where no incoming edge

    ve = v.index_select(1, senders)  # (B, E, H, d)
    out = torch.zeros((B, n_dst, H, d), dtype=acc, device=q.device)
    out = out.index_add(1, receivers, p.unsqueeze(-1) * ve.to(acc))
    # zero in-degree: out = 0 and denom = 0 → 0 / 1 = 0
    out = out / torch.where(denom > 0, denom, torch.ones_like(denom)).unsqueeze(-1)
    return out.to(v.dtype)


register("graph_attention", "reference", graph_attention_reference)
