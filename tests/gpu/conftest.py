"""GPU-only tests (`-m gpu`): deselected by default (pyproject's addopts), skipped where torch
sees no CUDA device. `perf/gpu_check.sh` runs them on a GPU machine; on CPU they must at least
collect (tests/test_gpu_check.py), so every import here is safe without a GPU.

Tolerances (float32 and bf16 against a float64 reference computed from the SAME rounded inputs,
so only the kernel's own rounding is measured):
  float32: accumulation in float32 over ≤ 64 edges / ≤ 520 channels: rtol 1e-4, atol 1e-5
           (outputs), 1e-4 (gradients), as the CPU kernel tests;
  bf16:    the kernels accumulate in float32 and round the result to bf16 once, whose unit
           roundoff is 2⁻⁸ ≈ 3.9e-3: one rounding of an O(1) value is ≤ 4e-3, so rtol 1.6e-2
           and atol 1.6e-2 (four units: the gradients chain two rounded products, dq·k and
           p·dout) — an error in a formula gives O(1) differences, far outside.
"""

from __future__ import annotations

import pytest
import torch

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run perf/gpu_check.sh on a GPU machine)")


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda")


def random_graph(n_src: int, n_dst: int, max_deg: int, gen: torch.Generator):
    """Destination-sorted edges, in-degrees 0..max_deg (destinations 0 and n_dst − 1 have none,
    source n_src − 1 sends nothing), unique (sender, receiver) pairs; int32 indices as the
    model's graphs."""
    deg = torch.randint(0, max_deg + 1, (n_dst,), generator=gen)
    deg[0] = deg[-1] = 0
    senders = torch.cat([torch.randperm(n_src - 1, generator=gen)[:int(d)] for d in deg])
    receivers = torch.arange(n_dst).repeat_interleave(deg.clamp(max=n_src - 1))
    return senders.to(torch.int32), receivers.to(torch.int32)


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, name: str):
    """float32: elementwise (TOL). bf16: relative L2 error ≤ 1e-2 (≈ 2.5 bf16 unit roundoffs;
    inputs saved in bf16 — out, dout — enter the backward's products, so a few units per entry
    accumulate) and no entry off by more than 5% of the largest reference entry."""
    assert actual.dtype == dtype and actual.shape == expected.shape, name
    a = actual.double()
    if dtype == torch.float32:
        torch.testing.assert_close(a, expected, **TOL[dtype], msg=name)
        return
    rel = (a - expected).norm() / expected.norm().clamp_min(1e-30)
    worst = (a - expected).abs().max() / expected.abs().max().clamp_min(1e-30)
    assert rel <= 1e-2 and worst <= 5e-2, f"{name}: relative L2 {rel:.2e}, worst {worst:.2e}"
