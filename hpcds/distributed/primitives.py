"""Raw collectives — the only place (with groups.py) that calls torch.distributed / mpi4py.

No autograd here (see autograd.py). Every function returns early for a group of size 1, so
single-process code paths do no communication and need no initialised process group.
A "peer" is a rank WITHIN the group (0 … size−1); torch ops map it to the global rank.

mpi4py is imported lazily: importing mpi4py.MPI initialises MPI, which torchrun-launched
jobs that use the torch transport never need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def group_size(group=None) -> int:
    return dist.get_world_size(group) if is_initialized() else 1


def group_rank(group=None) -> int:
    return dist.get_rank(group) if is_initialized() else 0


def global_ranks(group=None) -> list[int]:
    """Global rank of each group rank."""
    n = group_size(group)
    if group is None or n == 1:
        return list(range(n))
    return [dist.get_global_rank(group, r) for r in range(n)]


def all_reduce_sum_(x: torch.Tensor, group=None) -> torch.Tensor:
    """In-place sum of `x` over `group`."""
    if group_size(group) > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def all_reduce_sum_coalesced_(tensors: Sequence[torch.Tensor], group=None) -> None:
    """In-place sum of many tensors in ONE all-reduce per dtype (flatten, reduce, scatter)."""
    if group_size(group) == 1 or not tensors:
        return
    by_dtype: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for ts in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in ts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        offset = 0
        for t in ts:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def all_gather_object(obj, group=None) -> list:
    """[obj of group rank 0, …, obj of rank size−1] (pickled; setup only)."""
    n = group_size(group)
    if n == 1:
        return [obj]
    out = [None] * n
    dist.all_gather_object(out, obj, group=group)
    return out


def barrier(group=None) -> None:
    if group_size(group) > 1:
        dist.barrier(group=group)


def torch_exchange(sends: Sequence[tuple[int, torch.Tensor]],
                   recvs: Sequence[tuple[int, torch.Tensor]], group=None,
                   ranks: Sequence[int] | None = None) -> None:
    """Post every send (peer, contiguous tensor) and receive (peer, buffer) at once with
    batch_isend_irecv and wait. `ranks` maps group peers to global ranks (global_ranks())."""
    if not sends and not recvs:
        return
    ranks = global_ranks(group) if ranks is None else ranks
    ops = [dist.P2POp(dist.irecv, buf, ranks[peer], group) for peer, buf in recvs]
    ops += [dist.P2POp(dist.isend, t, ranks[peer], group) for peer, t in sends]
    for req in dist.batch_isend_irecv(ops):
        req.wait()


# --- mpi4py --------------------------------------------------------------------------------

def mpi_world():
    """MPI.COMM_WORLD (initialises MPI on first use)."""
    from mpi4py import MPI
    return MPI.COMM_WORLD


def mpi_cuda_aware() -> bool:
    """True when the MPI library reports CUDA support (device buffers can be passed as is)."""
    from mpi4py import MPI
    query = getattr(MPI, "Query_cuda_support", None)
    try:
        return bool(query()) if query is not None else False
    except Exception:  # MPI implementations without the MPIX extension
        return False


def _mpi_buffer(t: torch.Tensor):
    """A tensor's bytes as an mpi4py buffer spec (any dtype, bf16 included)."""
    from mpi4py import MPI
    return [t.reshape(-1).view(torch.uint8), MPI.BYTE]


def mpi_exchange(comm, sends: Sequence[tuple[int, torch.Tensor]],
                 recvs: Sequence[tuple[int, torch.Tensor]], tag: int = 17) -> None:
    """Non-blocking sends/receives between ranks of `comm`; tensors must be contiguous and on
    a device the MPI library can read (host, or device with CUDA-aware MPI)."""
    if not sends and not recvs:
        return
    from mpi4py import MPI
    reqs = [comm.Irecv(_mpi_buffer(buf), source=peer, tag=tag) for peer, buf in recvs]
    reqs += [comm.Isend(_mpi_buffer(t), dest=peer, tag=tag) for peer, t in sends]
    MPI.Request.Waitall(reqs)


def mpi_all_gather_object(comm, obj) -> list:
    return [obj] if comm.Get_size() == 1 else comm.allgather(obj)


def mpi_bcast_object(comm, obj, root: int = 0):
    return obj if comm.Get_size() == 1 else comm.bcast(obj, root=root)
