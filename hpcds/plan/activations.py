"""Activation memory of the real network, counted by running it on the meta device.

`count_activations` builds `DownscalerNet` (the model definition itself, not a table of layer
sizes) with parameters and graph buffers on PyTorch's meta device — tensors that have shapes
and dtypes but no storage, so an O2560 shard costs nothing — gives it the graph tensors of one
shard and halo modules that append the halo rows a shard receives, and runs one forward pass
with grad enabled under `torch.autograd.graph.saved_tensors_hooks`. What autograd saves for
the backward pass is the activation memory; it is summed over unique storages (views share),
leaving out parameters and buffers (counted as weights and graph memory elsewhere).

Fused kernels: the reference ops materialise per-edge / per-window tensors (graph attention
O(B·E·H·d), window attention logits O(B·N·W·H)) that a fused kernel never stores. With
`fused=True` (or the set of op names that have a fused kernel, e.g. {"graph_attention",
"modulated_layer_norm"}: `fused_ops(backend)`) every such op call's internally saved tensors
are replaced by what a fused kernel
saves: its inputs, its output and float32 per-row statistics (log-sum-exp (B, N, H) for
attention, mean and 1/std (B, N) for the modulated LayerNorm).

Activation checkpointing (every block — input embedding, encoder, processor, decoder,
refiner, output head — as `DownscalerNet` applies it): the blocks' inputs stay alive and the backward recomputes one
block at a time; `recompute_bytes` is the largest checkpointed block's own activations (any
kind), measured in a run without checkpointing, and the largest single tensor is that run's
(a recomputed block holds it again in backward).

The same counter works on a real (CPU) model: `SavedTensorCounter(net)` around any forward.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from hpcds.config.schema import Backend, ModelConfig
from hpcds.models import DownscalerNet
from hpcds.models.downscaler import InputEmbedding, OutputHead
from hpcds.indices import INDEX_DTYPE
from hpcds.models.graphs import ModelGraphs
from hpcds.models.parallelize import GRAPH_BLOCKS
from hpcds.nn import GraphAttentionBlock, LocalSkipFilter, WindowAttentionBlock, registered
from hpcds.nn.dispatch import OPS
from hpcds.nn.gated_linear import gated_linear_folded
from hpcds.nn.rms_norm import rms_norm_fused

META = torch.device("meta")
# graph name → (source node set, destination node set, ModelConfig field with k, the node
# set whose nearest neighbours were searched). Every graph has k edges per HR node.
GRAPHS = {
    "encoder": ("hr", "hidden", "encoder_knn", "hidden"),
    "decoder": ("hidden", "hr", "decoder_knn", "hidden"),
    "refiner": ("hr", "hr", "refiner_knn", "hr"),
}
# the blocks DownscalerNet checkpoints (its top-level modules holding them)
CHECKPOINTED = (InputEmbedding, GraphAttentionBlock, WindowAttentionBlock, OutputHead)
CHECKPOINTED_MODULES = ("input_embedding", "encoder", "processor", "decoder", "refiner", "head")
EDGE_ATTR_DIM = 3  # [east, north, distance]
HIDDEN_FEATURE_DIM = 3  # standardised unit vectors


@dataclass(frozen=True)
class ShardShape:
    """What one rank of a P-way model holds: `n_hr` HR rows, `n_hidden` hidden rows, `edges`
    per graph (name → E), `halo` rows appended before/after the local source rows per block
    kind ("window" and each graph name → (left, right)), `batch` samples."""

    n_hr: int
    n_hidden: int
    edges: dict[str, int]
    halo: dict[str, tuple[int, int]] = field(default_factory=dict)
    batch: int = 1


@dataclass
class ActivationCount:
    """Bytes saved for backward after one forward pass (unique storages), by top-level
    component of the model, plus the largest single saved tensor."""

    total: int = 0
    by_component: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_block: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    largest_tensor: int = 0
    recompute_bytes: int = 0  # checkpointing: the largest block, recomputed in backward
    piece_bytes: int = 0  # graph blocks in pieces of rows: the largest piece's own activations


class _MetaHalo(nn.Module):
    """Stands in for a halo exchange: appends `left` and `right` rows of zeros (the received
    halo) around the local rows; returns (extended rows, left), like the real exchange."""

    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = int(left), int(right)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, int]:
        B, _, C = h.shape
        return torch.cat([h.new_zeros(B, self.left, C), h, h.new_zeros(B, self.right, C)],
                         dim=1), self.left


# module attribute → (op, its fast path) for the fast paths written in torch ops
PLAIN_TORCH_FUSED = {"residual_op": ("gated_linear", gated_linear_folded),
                     "rms_op": ("rms_norm", rms_norm_fused)}


def fused_ops(backend: Backend | str) -> frozenset[str]:
    """The ops that `backend` has a fused kernel for (registered with the dispatch): a block
    whose op falls back to the reference keeps the reference's saved tensors in the count."""
    name = backend.value if isinstance(backend, Backend) else str(backend)
    # a plan is for the GPU: `auto` means any fast kernel registered for the op
    names = ("triton", "native") if name == Backend.auto.value else (name,)
    return frozenset(op for op in OPS if name != Backend.reference.value
                     and any(n in registered(op) for n in names))


def _op_name(module: nn.Module, attr: str) -> str:
    """The dispatch op behind a block's `attention_op` / `norm_op`."""
    if attr == "norm_op":
        return "modulated_layer_norm"
    return "window_attention" if isinstance(module, WindowAttentionBlock) else "graph_attention"


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class SavedTensorCounter:
    """Context manager: counts the bytes autograd saves during `net`'s forward passes.

    fused: model fused kernels (see module docstring) by wrapping each block's op callables:
    True for every op, or the names of the ops that have one (others count as the reference).
    """

    def __init__(self, net: nn.Module, fused: bool | frozenset[str] = False):
        self.net = net
        self.fused = frozenset(OPS) if fused is True else frozenset(fused or ())
        self.count = ActivationCount()
        self._seen: dict[int, int] = {}
        # graph blocks run in pieces of destination rows (`rows` > 0): None counts as usual,
        # a dict collects the first piece's saved tensors aside, False drops the later pieces'
        self._aside: dict | bool | None = None
        self._pieces_done: set[int] = set()
        self._alive: list[torch.Tensor] = []
        self._exclude = {_storage_key(t) for t in (*net.parameters(), *net.buffers())}
        self._component, self._block, self._in_op, self._in_ckpt = "inputs", "", 0, False
        self._handles, self._patched = [], []

    # -- bookkeeping ------------------------------------------------------------------------
    def _add(self, t: torch.Tensor) -> None:
        key = _storage_key(t)
        if key in self._exclude or key in self._seen:
            return
        if self._aside is not None:
            if self._aside is not False:
                self._aside[key] = _nbytes(t)
            return
        self._alive.append(t)  # a freed storage's address could be reused by a new one
        n = _nbytes(t)
        self._seen[key] = n
        c = self.count
        c.total += n
        c.by_component[self._component] += n
        if self._block:
            c.by_block[self._block] += n
        c.largest_tensor = max(c.largest_tensor, n)

    def _pack(self, t: torch.Tensor):
        if not self._in_op:
            self._add(t)
        return t

    def _enter(self, component: str, block: str):
        def hook(module, args):
            self._component, self._block = component, block
        return hook

    def _keep_inputs(self, module, args) -> None:
        for a in args:
            if isinstance(a, torch.Tensor):
                self._add(a)
        self._in_ckpt = True  # checkpoint saves nothing inside; the backward recomputes

    def _leave_ckpt(self, module, args, out) -> None:
        self._in_ckpt = False

    def _wrap_op(self, fn, kind: str):
        """An op whose internally saved tensors are replaced by a fused kernel's."""
        def wrapped(*args, **kwargs):
            self._in_op += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                self._in_op -= 1
            if torch.is_grad_enabled() and not self._in_ckpt:
                tensors = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
                for t in (*tensors, out):
                    self._add(t)
                B, N = out.shape[0], out.shape[1]
                rows = B * N * (out.shape[2] if kind == "attention" else 2)  # lse | mean, rstd
                if self._aside is not None:
                    if self._aside is not False:  # keyed apart from storages: one per call
                        self._aside[("op statistics", id(out))] = rows * 4
                    return out
                self.count.total += rows * 4
                self.count.by_component[self._component] += rows * 4
                if self._block:
                    self.count.by_block[self._block] += rows * 4
            return out
        return wrapped

    def _wrap_pieces(self, blk: nn.Module, fn):
        """GraphAttentionBlock._destination_rows of a block run in pieces: each piece is
        checkpointed, holding the block's keys and values (counted with the block) for its
        recompute; the first piece's own saved tensors are counted aside — one piece is
        recomputed at a time in backward — and added to the block's `by_block` figure (what
        recomputing the block holds), not to the total. The counted forward is not meant for
        a backward pass (the first piece's tensors bypass its checkpoint)."""
        def wrapped(x_dst, k, v, *rest):
            if not torch.is_grad_enabled() or self._in_ckpt:
                return fn(x_dst, k, v, *rest)
            for t in (k, v):
                self._add(t)
            first = id(blk) not in self._pieces_done
            self._aside = {} if first else False
            try:
                if first:
                    with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                        out = fn(x_dst, k, v, *rest)
                else:
                    out = fn(x_dst, k, v, *rest)
            finally:
                aside, self._aside = self._aside, None
            if first:
                self._pieces_done.add(id(blk))
                piece = sum(aside.values())
                c = self.count
                c.piece_bytes = max(c.piece_bytes, piece)
                c.largest_tensor = max(c.largest_tensor, max(aside.values(), default=0))
                if self._block:
                    c.by_block[self._block] += piece
            return out
        return wrapped

    # -- context --------------------------------------------------------------------------
    def __enter__(self) -> "SavedTensorCounter":
        labels = {}
        for name, child in self.net.named_children():
            blocks = child if isinstance(child, nn.ModuleList) else [child]
            for i, blk in enumerate(blocks):
                label = f"{name}.{i}" if isinstance(child, nn.ModuleList) else name
                labels[blk] = (name, label)
                self._handles.append(blk.register_forward_pre_hook(self._enter(name, label)))
        run_block = getattr(self.net, "_block", None)
        if run_block is not None:
            # DownscalerNet._block(blk, *args) may checkpoint blk, and checkpoint saves blk's
            # inputs (through the saved-tensor hooks) before blk's pre-hooks run: label first
            def labelled(blk, *args):
                if blk in labels:
                    self._component, self._block = labels[blk]
                return run_block(blk, *args)
            self.net._block = labelled
        for module in self.net.modules():
            if isinstance(module, GraphAttentionBlock) and module.rows > 0:
                fn = module._destination_rows
                self._patched.append((module, "_destination_rows", None))
                module._destination_rows = self._wrap_pieces(module, fn)
        if self.fused:
            for module in self.net.modules():
                for attr, kind in (("attention_op", "attention"), ("norm_op", "norm")):
                    if hasattr(module, attr) and _op_name(module, attr) in self.fused:
                        fn = getattr(module, attr)
                        self._patched.append((module, attr, fn))
                        setattr(module, attr, self._wrap_op(fn, kind))
                for attr, (op, fast) in PLAIN_TORCH_FUSED.items():
                    # plain torch ops (no kernel): what the fast path saves is counted as it runs
                    if hasattr(module, attr) and op in self.fused:
                        self._patched.append((module, attr, getattr(module, attr)))
                        setattr(module, attr, fast)
        if getattr(self.net, "activation_checkpointing", False):
            for blk in self.net.modules():
                if isinstance(blk, CHECKPOINTED):  # checkpointed: inputs stay alive
                    self._handles.append(blk.register_forward_pre_hook(self._keep_inputs))
                    self._handles.append(blk.register_forward_hook(self._leave_ckpt))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        for module, attr, fn in self._patched:
            if fn is None:  # an instance attribute over the class's method
                module.__dict__.pop(attr, None)
            else:
                setattr(module, attr, fn)
        self.net.__dict__.pop("_block", None)
        self._component, self._block = "inputs", ""
        self._alive.clear()


def meta_graphs(shape: ShardShape) -> ModelGraphs:
    """ModelGraphs whose tensors are meta tensors of one shard's shapes (whatever graphs the
    current ModelGraphs has: each must be in GRAPHS)."""
    values = {}
    for f in dataclasses.fields(ModelGraphs):
        name = f.name
        graph = name.rsplit("_", 1)[0] if name.endswith(("_senders", "_receivers")) else \
            name[: -len("_edge_attr")] if name.endswith("_edge_attr") else None
        if graph is not None:
            if graph not in GRAPHS:
                raise ValueError(f"the planner does not know graph {graph!r} of ModelGraphs: "
                                 "add it to hpcds.plan.activations.GRAPHS")
            E = shape.edges[graph]
            values[name] = (torch.empty(E, EDGE_ATTR_DIM, device=META)
                            if name.endswith("_edge_attr")
                            else torch.empty(E, dtype=INDEX_DTYPE, device=META))
        elif name == "hidden_features":
            values[name] = torch.empty(shape.n_hidden, HIDDEN_FEATURE_DIM, device=META)
        elif name == "n_hr":
            values[name] = shape.n_hr
        elif name == "n_hidden":
            values[name] = shape.n_hidden
        elif name.endswith("_length_scale"):
            values[name] = 1.0
        # other fields (the shard ranges) keep their defaults: a full graph of the shard's shape
    return ModelGraphs(**values)


def graph_edge_counts(cfg: ModelConfig, n_hr: int) -> dict[str, int]:
    """Edges of each graph the model has, for `n_hr` HR nodes (k per HR node)."""
    fields = {f.name for f in dataclasses.fields(ModelGraphs)}
    return {g: int(getattr(cfg, spec[2])) * n_hr for g, spec in GRAPHS.items()
            if f"{g}_senders" in fields}


def build_meta_model(cfg: ModelConfig, n_vars: int, n_forcings: int, shape: ShardShape,
                     dtype: torch.dtype = torch.float32) -> DownscalerNet:
    """The real DownscalerNet on the meta device with one shard's graphs and halo modules."""
    # the reference ops run on meta tensors (fused kernels are modelled by the counter)
    cfg = dataclasses.replace(cfg, backend=Backend.reference)
    with torch.device(META):
        net = DownscalerNet(cfg, n_vars, n_forcings, meta_graphs(shape))
    net = net.to(dtype)
    for name, module in net.named_modules():
        if isinstance(module, WindowAttentionBlock):
            module.halo = _MetaHalo(*shape.halo.get("window", (0, 0)))
        elif isinstance(module, (GraphAttentionBlock, LocalSkipFilter)):
            graph = GRAPH_BLOCKS[name.split(".")[0]][0]  # the graph it runs on, as sharded
            module.halo = _MetaHalo(*shape.halo.get(graph, (0, 0)))
    return net


def run_counted(net: nn.Module, n_hr: int, batch: int, fused: bool | frozenset[str],
                dtype: torch.dtype,
                device: torch.device = META) -> ActivationCount:
    """One forward pass with grad of `net` on (batch, n_hr) inputs, counting saved tensors."""
    V, F = net.n_vars, net.n_forcings
    x = torch.zeros(batch, n_hr, V, dtype=dtype, device=device)
    forcings = torch.zeros(batch, n_hr, F, dtype=dtype, device=device)
    c_noise = torch.zeros(batch, device=device)
    with torch.enable_grad(), SavedTensorCounter(net, fused=fused) as counter:
        net(x, x.clone(), forcings, c_noise)
        # the skip filter runs beside the network, in EDMPrecond (model.skip_filter)
        net.filter_skip(x.float(), torch.ones(batch, device=device), c_noise)
    return counter.count


def count_activations(cfg: ModelConfig, n_vars: int, n_forcings: int, shape: ShardShape,
                      dtype: torch.dtype = torch.bfloat16,
                      fused: bool | frozenset[str] = False
                      ) -> tuple[ActivationCount, ActivationCount]:
    """Saved-for-backward bytes of one rank's forward pass (meta device, nothing allocated):
    (without checkpointing, with checkpointing of every block; its `recompute_bytes` = the
    largest block of the first, its `largest_tensor` the first's)."""
    counts = []
    for ckpt in (False, True):
        net = build_meta_model(dataclasses.replace(cfg, activation_checkpointing=ckpt),
                               n_vars, n_forcings, shape, dtype)
        counts.append(run_counted(net, shape.n_hr, shape.batch, fused, dtype))
    plain, with_ckpt = counts
    with_ckpt.recompute_bytes = max((b for name, b in plain.by_block.items()
                                     if name.split(".")[0] in CHECKPOINTED_MODULES), default=0)
    # graph blocks in pieces recompute one piece at a time even without block checkpointing
    plain.recompute_bytes = plain.piece_bytes
    with_ckpt.largest_tensor = max(with_ckpt.largest_tensor, plain.largest_tensor)
    return plain, with_ckpt


def param_count(cfg: ModelConfig, n_vars: int, n_forcings: int) -> int:
    """Parameters of the real model (meta device: nothing allocated)."""
    shape = ShardShape(n_hr=1, n_hidden=1, edges={g: 1 for g in GRAPHS})
    net = build_meta_model(cfg, n_vars, n_forcings, shape)
    return sum(p.numel() for p in net.parameters())
