"""Halo transports: one interface, two implementations (`parallel.halo_transport`).

    exchange(sends, recvs)     sends: [(peer, tensor)], recvs: [(peer, buffer)] — every
                               buffer filled when it returns; peers are ranks of the
                               model-parallel group
    all_gather_object(obj)     setup-time metadata (plan verification)

TorchP2PTransport  torch.distributed batch_isend_irecv over the model-parallel ProcessGroup
                   (NCCL on GPU, gloo on CPU).
MpiTransport       mpi4py Isend/Irecv on a communicator of the same ranks. Device tensors go
                   straight to a CUDA-aware MPI; otherwise they are staged through host
                   memory (copied to CPU, received on CPU, copied back).
CountingTransport  wraps another and counts bytes and messages (perf/comm.py, tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hpcds.distributed import primitives as prim


class HaloTransport:
    """Point-to-point exchange within one model-parallel group of `size` ranks."""

    rank: int
    size: int

    def exchange(self, sends: Sequence[tuple[int, torch.Tensor]],
                 recvs: Sequence[tuple[int, torch.Tensor]]) -> None:
        raise NotImplementedError

    def all_gather_object(self, obj) -> list:
        raise NotImplementedError


class LocalTransport(HaloTransport):
    """A group of one rank: nothing to exchange (single process)."""

    rank, size = 0, 1

    def exchange(self, sends, recvs) -> None:
        if sends or recvs:
            raise RuntimeError("a single-rank group has no peers to exchange with")

    def all_gather_object(self, obj) -> list:
        return [obj]


class TorchP2PTransport(HaloTransport):
    """torch.distributed point-to-point over `group` (None = the default world group)."""

    def __init__(self, group=None):
        self.group = group
        self.rank, self.size = prim.group_rank(group), prim.group_size(group)
        self.ranks = prim.global_ranks(group)

    def exchange(self, sends, recvs) -> None:
        prim.torch_exchange([(p, t.contiguous()) for p, t in sends], recvs, self.group,
                            self.ranks)

    def all_gather_object(self, obj) -> list:
        return prim.all_gather_object(obj, self.group)


class MpiTransport(HaloTransport):
    """mpi4py over `comm` (default MPI.COMM_WORLD), whose rank order must match the
    model-parallel group's (groups.py splits COMM_WORLD that way)."""

    def __init__(self, comm=None, cuda_aware: bool | None = None):
        self.comm = prim.mpi_world() if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.cuda_aware = prim.mpi_cuda_aware() if cuda_aware is None else bool(cuda_aware)

    def _direct(self, t: torch.Tensor) -> bool:
        return t.device.type == "cpu" or self.cuda_aware

    def exchange(self, sends, recvs) -> None:
        staged_sends = [(p, t.contiguous() if self._direct(t) else t.detach().cpu())
                        for p, t in sends]
        staged_recvs = [(p, buf if self._direct(buf)
                         else torch.empty(buf.shape, dtype=buf.dtype, pin_memory=True))
                        for p, buf in recvs]
        if any(t.device.type == "cuda" for _, t in staged_sends + staged_recvs):
            torch.cuda.current_stream().synchronize()  # device data complete before MPI reads
        prim.mpi_exchange(self.comm, staged_sends, staged_recvs)
        for (_, buf), (_, staged) in zip(recvs, staged_recvs):
            if staged is not buf:
                buf.copy_(staged, non_blocking=True)

    def all_gather_object(self, obj) -> list:
        return prim.mpi_all_gather_object(self.comm, obj)


class CountingTransport(HaloTransport):
    """Forwards to `inner` and counts what this rank sends: bytes_sent, messages_sent."""

    def __init__(self, inner: HaloTransport):
        self.inner, self.rank, self.size = inner, inner.rank, inner.size
        self.bytes_sent = self.messages_sent = 0

    def exchange(self, sends, recvs) -> None:
        self.bytes_sent += sum(t.numel() * t.element_size() for _, t in sends)
        self.messages_sent += len(sends)
        self.inner.exchange(sends, recvs)

    def all_gather_object(self, obj) -> list:
        return self.inner.all_gather_object(obj)
