"""An in-process stand-in for a model-parallel group: P threads, one per rank, exchanging
tensors through queues. Lets halo plans, their exchanges and their adjoints be tested
without launching processes (the real transports are tested under torchrun and mpirun)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pytest
import torch

from hpcds.distributed import HaloTransport


class ThreadGroup:
    def __init__(self, size: int, timeout: float = 60.0):
        self.size, self.timeout = size, float(timeout)
        self.boxes = {(a, b): queue.Queue() for a in range(size) for b in range(size)}
        self.barrier = threading.Barrier(size)
        self.gathered: list = [None] * size

    def run(self, fn: Callable[[int, "ThreadTransport"], object]) -> list:
        """fn(rank, transport) on every rank in its own thread → results by rank; the
        first exception is re-raised."""
        results, errors = [None] * self.size, []

        def body(r):
            try:
                results[r] = fn(r, ThreadTransport(self, r))
            except BaseException as e:  # noqa: BLE001 — reported below
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.timeout)
        if errors:
            raise errors[0]
        return results


class ThreadTransport(HaloTransport):
    def __init__(self, group: ThreadGroup, rank: int):
        self.group, self.rank, self.size = group, rank, group.size

    def exchange(self, sends, recvs) -> None:
        for peer, t in sends:
            self.group.boxes[(self.rank, peer)].put(t.detach().clone())
        for peer, buf in recvs:
            got = self.group.boxes[(peer, self.rank)].get(timeout=self.group.timeout / 2)
            buf.copy_(got)

    def all_gather_object(self, obj) -> list:
        g = self.group
        g.barrier.wait()
        g.gathered[self.rank] = obj
        g.barrier.wait()
        out = list(g.gathered)
        g.barrier.wait()
        return out


def _thread_ranks(size: int, fn, timeout: float = 60.0) -> list:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ThreadGroup(size, timeout).run(fn)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def thread_ranks():
    """thread_ranks(P, fn(rank, transport), timeout=60) → [result of each rank]; a rank
    waits at most timeout/2 s for a peer's message (raise it for ranks that compile)."""
    return _thread_ranks

