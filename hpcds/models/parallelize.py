"""Shard a DownscalerNet over a model-parallel group, from outside (docs/architecture.md).

    shard = parallelize_model(model, ctx, n_hr=graphs.n_hr)
    out_local = model(x_in[:, shard.hr], cond[:, shard.hr], forcings[:, shard.hr], c_noise)
    loss = all_reduce_sum(local_partial_loss, ctx) / global_count        # float32
    loss.backward(); all_reduce_replicated_grads(model, ctx)             # = 1-process grads

Every node set (HR, hidden) is cut into P contiguous SFC ranges (`shard_ranges`); rank p owns
range p of each. Both sets are ordered along the same space-filling curve, so a rank's
hidden nodes lie near its HR nodes and its halos are thin. What changes, per rank:
  * each graph's (senders, receivers, edge_attr) buffers → the edges into the rank's own
    destinations (receivers rebased to 0…, senders into [own source rows | halo rows]), and
    the block's `halo` → a HaloModule with a frozen plan of the remote source rows;
  * every window block's `halo` → the W/2-row neighbour halo (multi-hop when shards are
    shorter than W/2);
  * `hidden_features` → the rank's hidden rows.
The model's per-node MLPs and embeddings then run on local rows unchanged; inputs and
outputs are the rank's HR rows. Weights stay replicated: after backward each rank holds
partial gradients (sums over its own destinations), and their sum over the group is the
single-process gradient (`all_reduce_replicated_grads`).

Which graph a GraphAttentionBlock uses is declared in GRAPH_BLOCKS (top-level module name →
buffer prefix, source set, destination set); a block not listed there is an error, so a new
block cannot silently run unsharded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from hpcds.distributed import HaloModule, HaloPlan, ShardContext, graph_shard, window_plan
from hpcds.distributed.halo import halo_needs, local_graph_shard
from hpcds.grids import shard_ranges
from hpcds.nn import GraphAttentionBlock, LocalSkipFilter, WindowAttentionBlock

# top-level module name → (buffer prefix, source node set, destination node set)
GRAPH_BLOCKS = {
    "encoder": ("encoder", "hr", "hidden"),
    "decoder": ("decoder", "hidden", "hr"),
    "refiner": ("refiner", "hr", "hr"),
    "skip_filter": ("refiner", "hr", "hr"),  # a LocalSkipFilter: the refiner's neighbours
}
# top-level module name → node set its window blocks run over
WINDOW_BLOCKS = {"processor": "hidden"}


@dataclass(frozen=True, eq=False)
class ModelShard:
    """What rank `rank` of `size` owns: `ranges[set]` = (start, stop) of every node set
    ("hr", "hidden"); `plans` the halo plan of each graph prefix and of each window width
    ("window<W>"). `hr` / `hidden` are slices for indexing global arrays along the node dim."""

    rank: int
    size: int
    ranges: dict[str, tuple[int, int]]
    plans: dict[str, HaloPlan] = field(default_factory=dict)

    @property
    def hr(self) -> slice:
        return slice(*self.ranges["hr"])

    @property
    def hidden(self) -> slice:
        return slice(*self.ranges["hidden"])

    @property
    def n_hr(self) -> int:
        a, b = self.ranges["hr"]
        return b - a

    def halo_rows(self) -> dict[str, tuple[int, int]]:
        """(rows sent, rows received) per exchange of each plan, for logs and perf."""
        return {k: (p.rows_sent, p.rows_received) for k, p in self.plans.items()}


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _blocks(model: nn.Module):
    """[(name, block, table entry)] of every graph/window attention block, checked."""
    found = []
    for name, mod in model.named_modules():
        if isinstance(mod, (GraphAttentionBlock, LocalSkipFilter)):
            table, kind = GRAPH_BLOCKS, "graph"
        elif isinstance(mod, WindowAttentionBlock):
            table, kind = WINDOW_BLOCKS, "window"
        else:
            continue
        if _top(name) not in table:
            raise ValueError(f"parallelize_model: no sharding rule for the {kind} attention "
                             f"block {name!r}; add its top-level module to "
                             f"{'GRAPH_BLOCKS' if kind == 'graph' else 'WINDOW_BLOCKS'}")
        found.append((name, mod, kind, table[_top(name)]))
    return found


def _set_buffer(model: nn.Module, name: str, value: torch.Tensor) -> None:
    if name not in model._buffers:
        raise ValueError(f"parallelize_model: the model has no buffer {name!r}")
    model._buffers[name] = value


def _check_ranges(ranges, n: int, P: int) -> list[tuple[int, int]]:
    """`ranges` as P (start, stop) tuples that tile [0, n) in order, each non-empty."""
    ranges = [(int(a), int(b)) for a, b in ranges]
    starts = [0] + [b for _, b in ranges[:-1]]
    if (len(ranges) != P or any(a != s for (a, _), s in zip(ranges, starts))
            or ranges[-1][1] != n or any(b <= a for a, b in ranges)):
        raise ValueError(f"parallelize_model: hr_ranges {ranges} must be {P} non-empty "
                         f"contiguous (start, stop) ranges covering [0, {n}) in order")
    return ranges


def parallelize_model(model: nn.Module, ctx: ShardContext, n_hr: int,
                      verify: bool = True,
                      hr_ranges: Sequence[tuple[int, int]] | None = None) -> ModelShard:
    """Shard `model` in place for rank ctx.rank of ctx.size; returns what the rank owns.
    The model holds either the FULL graphs (`build_model_graphs`; each rank keeps its slice)
    or only this rank's (`hpcds.models.shard_graphs.build_shard_graphs` for exactly the
    ranges this call assigns; the halo plans then take one all-gather of the halo ids per
    graph, and the result is the same). Collective when verify=True (every rank
    of the group calls it): each halo plan is checked by a real exchange. A group of one
    leaves the model unchanged. hr_ranges: the P HR (start, stop) ranges (default
    `shard_ranges(n_hr, P)`), e.g. aligned to an output store's chunks; the same on every
    rank."""
    if getattr(model, "_hpcds_model_shard", None) is not None:
        raise RuntimeError("parallelize_model: this model is already sharded")
    P, rank = ctx.size, ctx.rank
    part = getattr(model, "graph_part", None)  # built from this shard's graphs only
    n_hidden = part["n_hidden"] if part else int(model.hidden_features.shape[0])
    sizes = {"hr": int(n_hr), "hidden": int(n_hidden)}
    all_ranges = {k: shard_ranges(n, P) for k, n in sizes.items()}
    if hr_ranges is not None:
        all_ranges["hr"] = _check_ranges(hr_ranges, sizes["hr"], P)
    shard = ModelShard(rank, P, {k: r[rank] for k, r in all_ranges.items()})
    if part is not None and (part["n_hr"] != sizes["hr"] or any(
            tuple(part[k]) != shard.ranges[k] for k in ("hr", "hidden"))):
        raise ValueError(f"parallelize_model: the model holds the graphs of HR {part['hr']}, "
                         f"hidden {part['hidden']} (n_hr {part['n_hr']}) but rank {rank} of "
                         f"{P} owns HR {shard.ranges['hr']}, hidden {shard.ranges['hidden']} "
                         f"(n_hr {sizes['hr']}): build the graphs for these ranges")
    blocks = _blocks(model)
    if P == 1:
        model._hpcds_model_shard = shard
        return shard

    used = {entry[0] for _, _, kind, entry in blocks if kind == "graph"}
    for prefix, src, dst in sorted(set(GRAPH_BLOCKS.values())):
        names = [f"{prefix}_{s}" for s in ("senders", "receivers", "edge_attr")]
        if not all(n in model._buffers for n in names):
            if prefix in used:
                raise ValueError(f"parallelize_model: blocks use graph {prefix!r} but the "
                                 f"model has no buffers {names}")
            continue
        senders, receivers, attr = (model._buffers[n] for n in names)
        if senders.numel() and (int(senders.max()) >= sizes[src]
                                or int(receivers.max()) >= sizes[dst]):
            raise ValueError(f"parallelize_model: graph {prefix!r} indexes beyond the "
                             f"{src}/{dst} node counts {sizes[src]}/{sizes[dst]} (n_hr wrong?)")
        s_np, r_np = senders.cpu().numpy(), receivers.cpu().numpy()
        if part is None:
            gs = graph_shard(s_np, r_np, all_ranges[src], all_ranges[dst], rank)
        else:  # only our edges: learn who needs which of our rows from everyone's halo
            needs = ctx.transport.all_gather_object(halo_needs(s_np, all_ranges[src], rank))
            gs = local_graph_shard(s_np, r_np, all_ranges[src], all_ranges[dst], rank, needs)
        del s_np, r_np
        dev = senders.device
        _set_buffer(model, names[0], gs.senders.to(dev))
        _set_buffer(model, names[1], gs.receivers.to(dev))
        # a pre-sharded graph's attributes are already exactly the local ones: no copy
        _set_buffer(model, names[2], attr if part is not None else attr[gs.edges].clone())
        shard.plans[prefix] = gs.plan.to(dev)
        del senders, receivers, attr, gs  # the global-id buffers go before the next graph

    dev = model.hidden_features.device
    for name, blk, kind, entry in blocks:
        if kind == "graph":
            blk.halo = HaloModule(shard.plans[entry[0]], ctx)
        else:
            key = f"window{blk.window}"
            if key not in shard.plans:
                shard.plans[key] = window_plan(all_ranges[entry], rank, blk.window // 2).to(dev)
            blk.halo = HaloModule(shard.plans[key], ctx)
    if part is None:
        h0, h1 = shard.ranges["hidden"]
        _set_buffer(model, "hidden_features", model.hidden_features[h0:h1].clone())

    if verify:
        for key in sorted(shard.plans):  # the same order on every rank
            shard.plans[key].verify(ctx.transport)
    model._hpcds_model_shard = shard
    return shard
