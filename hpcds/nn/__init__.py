"""Layers and the custom ops of the network, each op behind one dispatch point.

Ops (pure-PyTorch references here; fast backends register under the same names):
    graph_attention(q, k, v, edge_bias, senders, receivers, n_dst)   graph_attention.py
    window_attention(q, k, v, window, kv_offset=0)                   window_attention.py
        fused (native, triton): window_attention_backends.py — flex_attention on CUDA,
        a blocked FlashAttention-style custom op on CPU
    modulated_layer_norm(x, scale, shift)                            modulation.py
    gated_linear(x, h, weight, bias, gate)  x + gate·Linear(h)      gated_linear.py
    rms_norm(x, weight, eps)                (qk-norm)                rms_norm.py
Select one with `get_op(name, backend)` (dispatch.py). Nothing in this package calls
torch.distributed: sharding swaps index tensors and halo modules from outside.
"""

from hpcds.nn.dispatch import OPS, get_op, register, registered
from hpcds.nn.graph_attention import graph_attention_reference
from hpcds.nn.window_attention import window_attention_reference
from hpcds.nn.modulation import AdaLN, modulated_layer_norm_reference
from hpcds.nn.layers import MLP, EdgeBias, NoiseEmbedding, RMSNorm
from hpcds.nn.blocks import GraphAttentionBlock, NoHalo, WindowAttentionBlock
from hpcds.nn.skip_filter import LocalSkipFilter
import hpcds.nn.kernels  # noqa: F401,E402  registers the triton/native backends (lazily)
from hpcds.nn.window_attention_backends import window_attention_fused  # noqa: E402  registers

__all__ = [
    "OPS", "AdaLN", "EdgeBias", "GraphAttentionBlock", "LocalSkipFilter", "MLP", "NoHalo",
    "NoiseEmbedding", "RMSNorm", "WindowAttentionBlock", "get_op", "graph_attention_reference",
    "modulated_layer_norm_reference", "register", "registered", "window_attention_fused",
    "window_attention_reference",
]
