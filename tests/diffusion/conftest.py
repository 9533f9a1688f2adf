"""The diffusion tests work on ~10^5-element tensors: one intra-op thread is as fast, and it
keeps them fast on a shared machine (OpenMP barriers spin badly when cores are busy)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
