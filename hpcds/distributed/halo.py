"""Frozen halo plans: which rows each rank sends to and receives from which peer.

A shard owns a contiguous range [start, stop) of a node set (global ids in SFC order). A
layer that reads other shards' rows works on the extended rows

    ext = [left halo | own n_local rows | right halo]        (along dim 1, the node dim)

where each halo part is the concatenation of the pieces received from its peers, in the
plan's order. A plan is built once from the graph (pure numpy, identical on every rank) and
then frozen; `verify()` exchanges global ids through it and checks them against what the
plan expects. Peers are ranks of the model-parallel group.

  graph_shard(...)   encoder/decoder/refiner edges: the source rows a rank's destinations
                     read, halo = [] | [remote sources, ascending global id]
  local_graph_shard(...)  the same from only the rank's own edges (built per shard) and
                     every rank's `halo_needs` (one all-gather instead of the full graph)
  window_plan(...)   sliding window of half-width b: the b rows on each side of the shard,
                     gathered from as many neighbours as needed when shards are shorter
                     than b (multi-hop); clipped at the sequence ends
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from hpcds.indices import index_tensor

Ranges = Sequence[tuple[int, int]]


class HaloPlanError(RuntimeError):
    """A halo plan that does not match its peers' plans or the data it moves."""


@dataclass(frozen=True, eq=False)
class HaloPlan:
    """rank/size: group rank and size; start/n_local: own rows [start, start + n_local);
    sends: ((peer, local row indices (k,) int64), …); left/right: ((peer, count), …)
    received before/after the own rows; halo_ids: (n_left + n_right,) int64 global ids
    of the halo rows in ext order (for verify and tests)."""

    rank: int
    size: int
    start: int
    n_local: int
    sends: tuple[tuple[int, torch.Tensor], ...]
    left: tuple[tuple[int, int], ...]
    right: tuple[tuple[int, int], ...]
    halo_ids: torch.Tensor

    @property
    def n_left(self) -> int:
        return sum(c for _, c in self.left)

    @property
    def n_right(self) -> int:
        return sum(c for _, c in self.right)

    @property
    def n_ext(self) -> int:
        return self.n_left + self.n_local + self.n_right

    @property
    def rows_sent(self) -> int:
        return sum(int(i.numel()) for _, i in self.sends)

    @property
    def rows_received(self) -> int:
        return self.n_left + self.n_right

    def __deepcopy__(self, memo) -> "HaloPlan":
        return self  # frozen: copies of a sharded model share their plans

    def ext_global_ids(self) -> torch.Tensor:
        """(n_ext,) int64: the global id of every extended row."""
        own = torch.arange(self.start, self.start + self.n_local, dtype=torch.int64)
        h = self.halo_ids.cpu()
        return torch.cat([h[:self.n_left], own, h[self.n_left:]])

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "HaloPlan":
        """The same plan with `fn` applied to its index tensors (e.g. a device move)."""
        return replace(self, sends=tuple((p, fn(i)) for p, i in self.sends),
                       halo_ids=fn(self.halo_ids))

    def to(self, device) -> "HaloPlan":
        return self.map_tensors(lambda t: t.to(device))

    def verify(self, transport) -> None:
        """Collective check over the group (every rank calls it): the counts each peer
        sends match what this rank expects, and the global ids that arrive through the plan
        are exactly `halo_ids`. Raises HaloPlanError on every rank if any rank fails."""
        if transport.size != self.size or transport.rank != self.rank:
            raise HaloPlanError(f"plan for rank {self.rank}/{self.size} used on transport "
                                f"rank {transport.rank}/{transport.size}")
        mine = ({p: int(i.numel()) for p, i in self.sends},
                {p: c for p, c in self.left + self.right})
        table = transport.all_gather_object(mine)
        bad = [f"rank {q} sends {table[q][0].get(r, 0)} rows to rank {r}, which expects "
               f"{table[r][1].get(q, 0)}" for q in range(self.size) for r in range(self.size)
               if table[q][0].get(r, 0) != table[r][1].get(q, 0)]
        if bad:
            raise HaloPlanError("halo plans disagree: " + "; ".join(bad[:4]))
        ids = torch.arange(self.start, self.start + self.n_local, dtype=torch.int64)
        device = self.halo_ids.device
        ext = gather_halo(ids.view(1, -1, 1).to(device), self, transport).view(-1).cpu()
        ok = bool(torch.equal(ext, self.ext_global_ids()))
        oks = transport.all_gather_object(ok)
        if not all(oks):
            raise HaloPlanError("halo exchange delivered the wrong rows on rank(s) "
                                f"{[r for r, o in enumerate(oks) if not o]}")


# --- moving data along a plan (no autograd; autograd.py wraps these) -----------------------

def gather_halo(x: torch.Tensor, plan: HaloPlan, transport) -> torch.Tensor:
    """x (B, n_local, *F) → ext (B, n_ext, *F): own rows plus the rows received."""
    if x.shape[1] != plan.n_local:
        raise ValueError(f"halo exchange expects {plan.n_local} rows on dim 1, got "
                         f"{tuple(x.shape)}")
    if plan.size == 1:
        return x
    B, rest = x.shape[0], tuple(x.shape[2:])
    sends = [(p, x.index_select(1, idx)) for p, idx in plan.sends]
    left = [(p, x.new_empty((B, c) + rest)) for p, c in plan.left]
    right = [(p, x.new_empty((B, c) + rest)) for p, c in plan.right]
    transport.exchange(sends, left + right)
    return torch.cat([b for _, b in left] + [x] + [b for _, b in right], dim=1)


def scatter_halo_grad(grad_ext: torch.Tensor, plan: HaloPlan, transport) -> torch.Tensor:
    """The adjoint of gather_halo: grad_ext (B, n_ext, *F) → (B, n_local, *F); halo rows'
    gradients go back to their owners, which accumulate them into the rows they sent."""
    if plan.size == 1:
        return grad_ext
    B, rest = grad_ext.shape[0], tuple(grad_ext.shape[2:])
    lo, hi = plan.n_left, plan.n_left + plan.n_local
    # a copy even where the slice is contiguous (B = 1): the result is written into below and
    # must not alias grad_ext (the input of a custom op, hpcds::halo_exchange_backward)
    grad = grad_ext[:, lo:hi].clone(memory_format=torch.contiguous_format)
    back, offset = [], 0
    for p, c in plan.left:
        back.append((p, grad_ext[:, offset:offset + c].contiguous()))
        offset += c
    offset = hi
    for p, c in plan.right:
        back.append((p, grad_ext[:, offset:offset + c].contiguous()))
        offset += c
    bufs = [(p, grad_ext.new_empty((B, int(idx.numel())) + rest)) for p, idx in plan.sends]
    transport.exchange(back, bufs)
    for (_, idx), (_, g) in zip(plan.sends, bufs):
        grad.index_add_(1, idx, g)
    return grad


# --- building plans (pure data: every rank computes the same answer) -----------------------

def owner_of(ids: np.ndarray, ranges: Ranges) -> np.ndarray:
    """Shard index of each global id for contiguous `ranges` [(start, stop)]."""
    starts = np.asarray([a for a, _ in ranges], dtype=np.int64)
    return np.searchsorted(starts, ids, side="right") - 1


def _check_ranges(ranges: Ranges, n: int | None = None) -> None:
    if not ranges or ranges[0][0] != 0 or any(a >= b for a, b in ranges) or any(
            r[1] != s[0] for r, s in zip(ranges, ranges[1:])) or (n is not None
                                                                  and ranges[-1][1] != n):
        raise ValueError(f"shard ranges must be non-empty, contiguous and cover [0, n): "
                         f"{list(ranges)}")


def _plan(rank: int, ranges: Ranges, sends: dict[int, np.ndarray],
          left_ids: np.ndarray, right_ids: np.ndarray) -> HaloPlan:
    """Plan of `rank` from its send lists (global ids per peer) and halo ids; the halo
    pieces are grouped by owner, ascending."""
    start, stop = ranges[rank]

    def pieces(ids):
        owners = owner_of(ids, ranges)
        return tuple((int(q), int((owners == q).sum())) for q in np.unique(owners))

    def idx(a):
        return torch.from_numpy(np.ascontiguousarray(a - start, dtype=np.int64))

    return HaloPlan(rank=rank, size=len(ranges), start=start, n_local=stop - start,
                    sends=tuple((q, idx(ids)) for q, ids in sorted(sends.items()) if len(ids)),
                    left=pieces(left_ids), right=pieces(right_ids),
                    halo_ids=torch.from_numpy(np.concatenate([left_ids, right_ids]
                                                             ).astype(np.int64)))


@dataclass(frozen=True, eq=False)
class GraphShard:
    """One rank's part of a bipartite graph whose receivers are sorted: its edges are the
    contiguous slice `edges` of the global edge arrays; senders (E_loc,) index the source
    ext rows [own | halo], receivers (E_loc,) the own destinations 0 … n_dst_local−1, both
    the model's graph index dtype (hpcds.indices.INDEX_DTYPE, int32); the numpy work
    that makes them is int64."""

    plan: HaloPlan
    edges: slice
    senders: torch.Tensor
    receivers: torch.Tensor
    dst_start: int
    n_dst: int


def graph_shard(senders, receivers, src_ranges: Ranges, dst_ranges: Ranges,
                rank: int) -> GraphShard:
    """`rank`'s GraphShard of the graph (senders, receivers) (E,) global ids, receivers
    non-decreasing, source node set cut into `src_ranges`, destinations into `dst_ranges`."""
    s = np.asarray(senders, dtype=np.int64)
    r = np.asarray(receivers, dtype=np.int64)
    _check_ranges(src_ranges)
    _check_ranges(dst_ranges)
    if len(src_ranges) != len(dst_ranges):
        raise ValueError("source and destination need one shard per rank each")
    if len(r) and np.any(np.diff(r) < 0):
        raise ValueError("graph receivers must be sorted (non-decreasing)")
    n_src = src_ranges[-1][1]
    if len(s) and (s.min() < 0 or s.max() >= n_src or r.min() < 0
                   or r.max() >= dst_ranges[-1][1]):
        raise ValueError("graph indices outside the shard ranges' node sets")
    # unique (destination shard, remote source) pairs, sorted by shard then source id
    src_owner, dst_owner = owner_of(s, src_ranges), owner_of(r, dst_ranges)
    remote = src_owner != dst_owner
    pairs = np.unique(dst_owner[remote] * n_src + s[remote])
    need_shard, need_id = pairs // n_src, pairs % n_src
    start, stop = src_ranges[rank]
    mine = (need_id >= start) & (need_id < stop)
    sends = {int(q): need_id[mine & (need_shard == q)] for q in np.unique(need_shard[mine])}
    halo = need_id[need_shard == rank]  # ascending, grouped by owner
    plan = _plan(rank, src_ranges, sends, np.zeros(0, np.int64), halo)

    d0, d1 = dst_ranges[rank]
    lo, hi = np.searchsorted(r, d0, "left"), np.searchsorted(r, d1, "left")
    ls = s[lo:hi]
    own = (ls >= start) & (ls < stop)
    local = np.where(own, ls - start, plan.n_local + np.searchsorted(halo, ls))
    return GraphShard(plan=plan, edges=slice(int(lo), int(hi)),
                      senders=index_tensor(local), receivers=index_tensor(r[lo:hi] - d0),
                      dst_start=d0, n_dst=d1 - d0)


def halo_needs(senders, src_ranges: Ranges, rank: int) -> np.ndarray:
    """(h,) int64 ascending: the distinct source ids of `senders` (one rank's edges, global
    ids) that other shards own — what the rank must receive. Gathered over the group, these
    lists are what `local_graph_shard` needs to know who sends what."""
    _check_ranges(src_ranges)
    s = np.asarray(senders, dtype=np.int64)
    start, stop = src_ranges[rank]
    return np.unique(s[(s < start) | (s >= stop)])  # filter first: the halo is ~1 % of E


def local_graph_shard(senders, receivers, src_ranges: Ranges, dst_ranges: Ranges, rank: int,
                      needs: Sequence[np.ndarray]) -> GraphShard:
    """`rank`'s GraphShard from ONLY its own edges: senders/receivers (E_loc,) global ids,
    receivers non-decreasing and all inside dst_ranges[rank]; needs[q] = `halo_needs` of
    rank q (e.g. all_gather_object of each rank's list). Equal to `graph_shard` of the full
    graph (same plan, senders and receivers; `edges` covers all E_loc given edges)."""
    s = np.asarray(senders, dtype=np.int64)
    r = np.asarray(receivers, dtype=np.int64)
    _check_ranges(src_ranges)
    _check_ranges(dst_ranges)
    if len(src_ranges) != len(dst_ranges) or len(needs) != len(src_ranges):
        raise ValueError("source, destination and needs need one entry per rank each")
    d0, d1 = dst_ranges[rank]
    if len(r) and (np.any(np.diff(r) < 0) or r[0] < d0 or r[-1] >= d1):
        raise ValueError(f"a local graph's receivers must be sorted and inside [{d0}, {d1})")
    if len(s) and (s.min() < 0 or s.max() >= src_ranges[-1][1]):
        raise ValueError("graph senders outside the source node set")
    start, stop = src_ranges[rank]
    remote = (s < start) | (s >= stop)  # (E,) bool; a few % of the edges
    halo = np.unique(s[remote])
    sends = {}
    for q, ids in enumerate(needs):
        ids = np.asarray(ids, dtype=np.int64)
        if q != rank:
            sends[q] = ids[(ids >= start) & (ids < stop)]
    plan = _plan(rank, src_ranges, sends, np.zeros(0, np.int64), halo)
    # int64 work arrays, one per index set (the graphs of an O2560 shard hold ~50 M edges),
    # each freed once its INDEX_DTYPE (int32) result exists
    local = s - start
    local[remote] = plan.n_local + np.searchsorted(halo, s[remote])
    del s, remote
    senders_t = index_tensor(local)
    del local
    return GraphShard(plan=plan, edges=slice(0, int(len(senders_t))), senders=senders_t,
                      receivers=index_tensor(r - d0), dst_start=d0, n_dst=d1 - d0)


def window_plan(ranges: Ranges, rank: int, half_window: int) -> HaloPlan:
    """Halo of a sliding window of half-width b = `half_window` over a sequence cut into
    `ranges`: b rows on each side of the shard (fewer at the sequence ends), from as many
    neighbours as needed. Per layer a rank sends and receives at most 2·b rows."""
    _check_ranges(ranges)
    b, n = int(half_window), ranges[-1][1]
    if b < 1:
        raise ValueError(f"half window must be >= 1, got {b}")

    def needs(q):
        a, z = ranges[q]
        return np.arange(max(0, a - b), a), np.arange(z, min(n, z + b))

    start, stop = ranges[rank]
    sends = {}
    for q in range(len(ranges)):
        if q != rank:
            ids = np.concatenate(needs(q))
            sends[q] = ids[(ids >= start) & (ids < stop)]
    left, right = needs(rank)
    return _plan(rank, ranges, sends, left, right)
