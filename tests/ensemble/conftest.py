"""One intra-op torch thread for the ensemble tests: the tiny model is as fast on one, and
two OpenMP threads can run 10x slower when another OpenMP/BLAS runtime is loaded first (scipy
before torch) or the cores are shared — the same choice as tests/diffusion."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
