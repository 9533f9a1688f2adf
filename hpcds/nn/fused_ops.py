"""`torch.library` custom ops around the fused kernels of one backend (triton, native).

A backend supplies plain launchers (`GraphAttentionKernels`, `LayerNormKernels`: tensors in,
freshly allocated tensors out, no autograd); `define_graph_attention(name, kernels)` and
`define_modulated_layer_norm(name, kernels)` wrap them as

    hpcds::graph_attention_<name>            (q, k, v, edge_bias, senders, receivers, rowptr)
                                             → (out, lse)
    hpcds::graph_attention_<name>_backward   → (dq, dk, dv, d_edge_bias)
    hpcds::modulated_layer_norm_<name>       (x, scale, shift) → (y, mean, rstd)
    hpcds::modulated_layer_norm_<name>_backward → (dx, dscale, dshift)

each with a fake (meta) implementation and the backward registered as the forward's autograd
formula, so `torch.compile` traces through both passes without graph breaks, and return a
Python function with the reference's signature (what `dispatch.register` stores). Every
kernel call sits in an NVTX range `hpcds.<op>.<backend>.<pass>` (no-ops without a GPU).

Saved for the backward: the inputs, `out` and the per-(node, head) log-sum-exp `lse` (graph
attention), or the per-row mean and 1/std (LayerNorm): O(nodes × dim), nothing per edge × dim.
"""

from __future__ import annotations

from typing import Callable, Protocol

import nvtx
import torch

from hpcds.nn.modulation import LN_EPS

Tensor = torch.Tensor


class GraphAttentionKernels(Protocol):
    """Launchers; logits use the scale 1/√d. `bias` arrives as (B, E, H), stride 0 over B
    when shared; senders/receivers (E,) int32 or int64 (both the same), rowptr int64;
    backward returns the per-sample bias gradient ds (B, E, H)."""

    def compute_dtype(self, dtype: torch.dtype) -> torch.dtype: ...

    def graph_attention_forward(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor,
                                senders: Tensor, receivers: Tensor, rowptr: Tensor
                                ) -> tuple[Tensor, Tensor]: ...

    def graph_attention_backward(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                 bias: Tensor, senders: Tensor, receivers: Tensor,
                                 rowptr: Tensor, out: Tensor, lse: Tensor
                                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


class LayerNormKernels(Protocol):
    def compute_dtype(self, dtype: torch.dtype) -> torch.dtype: ...

    def layer_norm_forward(self, x: Tensor, scale: Tensor, shift: Tensor, eps: float
                           ) -> tuple[Tensor, Tensor, Tensor]: ...

    def layer_norm_backward(self, dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor,
                            rstd: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics dtype: float32, or float64 for float64 inputs (as the references)."""
    return torch.promote_types(dtype, torch.float32)


INDEX_DTYPES = (torch.int32, torch.int64)


def check_index_dtypes(senders: Tensor, receivers: Tensor) -> None:
    """senders and receivers: both int32 or both int64 (what every backend takes)."""
    if senders.dtype not in INDEX_DTYPES or receivers.dtype != senders.dtype:
        raise TypeError(f"graph indices must be int32 or int64, both the same: senders "
                        f"{senders.dtype}, receivers {receivers.dtype}")


def csr_rowptr(receivers: Tensor, n_dst: int) -> Tensor:
    """receivers (E,) sorted, int32 or int64 → rowptr (n_dst + 1,) int64: the incoming edges
    of destination i are rowptr[i] .. rowptr[i+1]. A binary search, so no host
    synchronisation. The boundaries are made in the receivers' dtype (n_dst + 1 fits: a
    graph indexed in int32 has n_dst < 2^31 - 1) and the result is int64 (edge offsets)."""
    bounds = torch.arange(n_dst + 1, device=receivers.device, dtype=receivers.dtype)
    return torch.searchsorted(receivers, bounds)


def packed_heads(t: Tensor) -> Tensor:
    """t (B, N, H, d) with its (H, d) dims packed, copying only if they are not: the kernels
    take any batch and node stride (e.g. k and v as views of one fused kv projection)."""
    B, N, H, d = t.shape
    if (t.stride(-1) == 1 or d == 1) and (t.stride(-2) == d or H == 1):
        return t
    return t.contiguous()


def define_graph_attention(name: str, kernels: GraphAttentionKernels) -> Callable:
    """Register the graph-attention custom ops of backend `name`; returns the function with
    `graph_attention_reference`'s signature."""
    op_name = f"hpcds::graph_attention_{name}"

    @torch.library.custom_op(op_name, mutates_args=())
    def forward(q: Tensor, k: Tensor, v: Tensor, edge_bias: Tensor, senders: Tensor,
                receivers: Tensor, rowptr: Tensor) -> tuple[Tensor, Tensor]:
        with nvtx.annotate(f"hpcds.graph_attention.{name}.forward"):
            return kernels.graph_attention_forward(q, k, v, _batched(edge_bias, q), senders,
                                                   receivers, rowptr)

    @forward.register_fake
    def _(q, k, v, edge_bias, senders, receivers, rowptr):
        return torch.empty_like(q, memory_format=torch.contiguous_format), \
            q.new_empty(q.shape[:3], dtype=acc_dtype(q.dtype))

    @torch.library.custom_op(op_name + "_backward", mutates_args=())
    def backward_op(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, edge_bias: Tensor,
                    senders: Tensor, receivers: Tensor, rowptr: Tensor, out: Tensor,
                    lse: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        with nvtx.annotate(f"hpcds.graph_attention.{name}.backward"):
            dq, dk, dv, ds = kernels.graph_attention_backward(
                dout, q, k, v, _batched(edge_bias, q), senders, receivers, rowptr, out, lse)
        # ds (B, E, H) is the gradient of each sample's bias; a shared bias sums them
        dbias = ds.sum(0) if edge_bias.dim() == 2 else ds
        return dq, dk, dv, dbias.to(edge_bias.dtype)

    @backward_op.register_fake
    def _(dout, q, k, v, edge_bias, senders, receivers, rowptr, out, lse):
        return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
                edge_bias.new_empty(edge_bias.shape))

    def setup_context(ctx, inputs, output):
        q, k, v, edge_bias, senders, receivers, rowptr = inputs
        out, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, edge_bias, senders, receivers, rowptr, out, lse)

    def backward(ctx, dout, _dlse):
        dq, dk, dv, dbias = backward_op(dout.contiguous(), *ctx.saved_tensors)
        return dq, dk, dv, dbias, None, None, None

    forward.register_autograd(backward, setup_context=setup_context)

    def graph_attention(q: Tensor, k: Tensor, v: Tensor, edge_bias: Tensor, senders: Tensor,
                        receivers: Tensor, n_dst: int) -> Tensor:
        """Fused graph attention (`graph_attention_reference`'s contract): q (B, n_dst, H, d),
        k/v (B, N_src, H, d), edge_bias (E, H) or (B, E, H), senders/receivers (E,) int32 or
        int64 (the same) with receivers sorted → (B, n_dst, H, d) in v's dtype."""
        if q.shape[1] != n_dst:
            raise ValueError(f"q has {q.shape[1]} destination rows, n_dst={n_dst}")
        check_index_dtypes(senders, receivers)
        dt = kernels.compute_dtype(q.dtype)
        q, k, v_ = (packed_heads(t.to(dt)) for t in (q, k, v))
        bias = edge_bias.to(acc_dtype(dt)).contiguous()
        out, _ = forward(q, k, v_, bias, senders, receivers, csr_rowptr(receivers, n_dst))
        return out.to(v.dtype)

    graph_attention.__name__ = graph_attention.__qualname__ = f"graph_attention_{name}"
    return graph_attention


def _batched(edge_bias: Tensor, q: Tensor) -> Tensor:
    """(E, H) → a stride-0 (B, E, H) view; (B, E, H) unchanged."""
    return edge_bias.expand(q.shape[0], -1, -1) if edge_bias.dim() == 2 else edge_bias


def define_modulated_layer_norm(name: str, kernels: LayerNormKernels) -> Callable:
    """Register the modulated-LayerNorm custom ops of backend `name`; returns the function
    with `modulated_layer_norm_reference`'s signature."""
    op_name = f"hpcds::modulated_layer_norm_{name}"

    @torch.library.custom_op(op_name, mutates_args=())
    def forward(x: Tensor, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with nvtx.annotate(f"hpcds.modulated_layer_norm.{name}.forward"):
            return kernels.layer_norm_forward(x, scale, shift, LN_EPS)

    @forward.register_fake
    def _(x, scale, shift):
        stats = x.new_empty(x.shape[:2], dtype=acc_dtype(x.dtype))
        return torch.empty_like(x, memory_format=torch.contiguous_format), stats, \
            torch.empty_like(stats)

    @torch.library.custom_op(op_name + "_backward", mutates_args=())
    def backward_op(dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor, rstd: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        with nvtx.annotate(f"hpcds.modulated_layer_norm.{name}.backward"):
            return kernels.layer_norm_backward(dy, x, scale, mean, rstd)

    @backward_op.register_fake
    def _(dy, x, scale, mean, rstd):
        return x.new_empty(x.shape), scale.new_empty(scale.shape), scale.new_empty(scale.shape)

    def setup_context(ctx, inputs, output):
        x, scale, _ = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.save_for_backward(x, scale, mean, rstd)

    def backward(ctx, dy, _dmean, _drstd):
        return backward_op(dy.contiguous(), *ctx.saved_tensors)

    forward.register_autograd(backward, setup_context=setup_context)

    def modulated_layer_norm(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """Fused LN(x)·(1 + scale) + shift (`modulated_layer_norm_reference`'s contract):
        x (B, N, C), scale/shift (B, C) → (B, N, C) in x's dtype."""
        dt = kernels.compute_dtype(x.dtype)
        y, _, _ = forward(x.to(dt).contiguous(), scale.to(dt).contiguous(),
                          shift.to(dt).contiguous())
        return y.to(x.dtype)

    modulated_layer_norm.__name__ = modulated_layer_norm.__qualname__ = \
        f"modulated_layer_norm_{name}"
    return modulated_layer_norm
