"""The fused backends of `window_attention`, registered with the dispatch as `native` and
`triton` — one function for both names, choosing by the tensors' device at call time (layers
resolve their op once, at construction, before they know where their tensors will live):

  CUDA, float32 / bf16 / fp16   compiled flex_attention with a band block mask
                                (`window_attention_flex.py`; inductor writes Triton kernels)
  CPU, any float dtype          blocked FlashAttention-style custom op on PyTorch's CPU flash
                                kernel (`window_attention_blocked.py`)
  anything else                 the reference (float64 on CUDA: a test dtype, not a training one)

Both fused paths save O(N·C) for backward (inputs, out, float32 lse), never the (N, W) logits,
and neither needs a compiled library or the triton package on CPU, so both names are always
available: `model.backend: native` and `triton` use them on CPU too (where the graph ops of
`triton` fall back to the reference without TRITON_INTERPRET=1 — harmless: every op falls back
on its own). `hpcds plan` therefore counts the window attention as fused for both
(`hpcds.plan.activations.fused_ops`).
"""

from __future__ import annotations

import torch

from hpcds.nn.dispatch import register
from hpcds.nn.window_attention import window_attention_reference
from hpcds.nn.window_attention_flex import FLEX_DTYPES, window_attention_flex
from hpcds.nn.window_attention_blocked import window_attention_blocked


def compute_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.dtype:
    """The inputs' common dtype, or autocast's where autocast is on for their device (what the
    reference's matmuls run in under autocast; float64 is never cast). Inside, either path
    keeps the softmax statistics and accumulations in float32."""
    dt = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    dev = q.device.type
    if dev in ("cpu", "cuda") and dt != torch.float64 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return dt


def window_attention_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                           kv_offset: int = 0) -> torch.Tensor:
    """`window_attention_reference`'s contract: q (B, N, H, d), k/v (B, N_k, H, d) with
    N_k ≥ N + kv_offset → (B, N, H, d) in `compute_dtype`."""
    dt = compute_dtype(q, k, v)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    if q.device.type == "cpu":
        return window_attention_blocked(q, k, v, window, kv_offset)
    if q.device.type == "cuda" and dt in FLEX_DTYPES:
        return window_attention_flex(q, k, v, window, kv_offset)
    return window_attention_reference(q, k, v, window, kv_offset)


register("window_attention", "native", window_attention_fused)
register("window_attention", "triton", window_attention_fused)
