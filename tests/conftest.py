"""Shared test settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton runs only through its interpreter, and the interpreter must be chosen
# BEFORE triton is first imported (triton.language's own @jit helpers are built at import):
# other packages (torch.compile, DeepSpeed) may import triton in earlier tests. Harmless for
# everything else: a model uses the triton backend only when model.backend asks for it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Suites of many small tensor ops (~1e5 elements): one intra-op thread is as fast, and keeps
# them fast on a shared 2-core machine, where two OpenMP threads' barriers can spin 10x slower.
# Module scope, restored afterwards: tests that compare runs bit for bit (tests/train) keep
# torch's default thread count in both halves.
ONE_THREAD_SUITES = {"diffusion", "ensemble"}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread_for_small_tensor_suites(request):
    if Path(str(request.fspath)).parent.name not in ONE_THREAD_SUITES:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
