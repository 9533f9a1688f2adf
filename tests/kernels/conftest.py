"""Kernel tests: Triton through its interpreter on CPU (TRITON_INTERPRET=1, ~3 ms per program,
so graphs have tens of nodes), the native CPU library as built by scripts/setup.sh.

Both backends are REQUIRED here (a missing one fails, it does not skip): CI installs triton
with the test extra and builds the library in setup.sh. Inputs are fresh random draws on
every run; a failing test prints its seed (`seed` fixture) to replay it with HPCDS_TEST_SEED.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from hpcds.nn import kernels

BACKENDS = ("triton", "native")


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch):
    """Without a GPU, Triton runs through its interpreter, for these tests only: the variable
    is read when the kernels first load (inside a test) and by `triton_available()`."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seed(request) -> int:
    s = int(os.environ.get("HPCDS_TEST_SEED", torch.randint(0, 2**31 - 1, ()).item()))
    request.node.user_properties.append(("seed", s))
    print(f"seed={s} (replay with HPCDS_TEST_SEED={s})")
    return s


def fused(op: str, backend: str):
    """The backend's implementation, asserting it loaded (no silent fallback in these tests)."""
    assert getattr(kernels, f"{backend}_available")(), (
        f"{backend} kernels unavailable: see the log; triton needs `pip install -e .[test]`, "
        f"native needs `bash scripts/setup.sh`")
    return getattr(kernels, f"{op}_{backend}")


def random_graph(n_src: int, n_dst: int, max_deg: int, gen: torch.Generator):
    """Destination-sorted edges with uneven in-degrees 0..max_deg, unique (sender, receiver)
    pairs; destinations 0 and n_dst - 1 and source n_src - 1 have no edges."""
    senders, receivers = [], []
    for i in range(n_dst):
        deg = 0 if i in (0, n_dst - 1) else int(torch.randint(0, max_deg + 1, (1,),
                                                              generator=gen))
        senders.append(torch.randperm(n_src - 1, generator=gen)[:deg])
        receivers.append(torch.full((senders[-1].numel(),), i, dtype=torch.int64))
    return torch.cat(senders), torch.cat(receivers)


def peak_allocated_bytes(fn) -> int:
    """Peak of the bytes allocated minus freed through torch's CPU allocator while fn runs."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak
