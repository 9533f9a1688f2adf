"""Named ranges for Nsight and the torch profiler, and the Nsight capture window.

    with trace_range("optimizer"):          # an NVTX range (nvtx package: a no-op without a
        optimizer.step()                    # GPU tool attached) and a torch.profiler label

Ranges used across the package: "data", "halo_exchange", "encoder", "processor", "decoder",
"refiner", "optimizer", "sampler_step". `torch.cuda.nvtx` raises on CPU builds of torch, so
the standalone `nvtx` package is used (~1 µs per range when nothing listens).

`CaptureWindow(cfg.profile)` starts the CUDA profiler before step `start_step` and stops it
after `num_steps` steps, so `nsys --capture-range=cudaProfilerApi` (launch/profile.sh)
records only steady-state steps; without CUDA it does nothing.
"""

from __future__ import annotations

from contextlib import contextmanager

import nvtx
import torch
from torch.autograd.profiler import record_function

from hpcds.config.schema import ProfileConfig

DOMAIN = "hpcds"


@contextmanager
def trace_range(name: str):
    with nvtx.annotate(name, domain=DOMAIN), record_function(name):
        yield


class CaptureWindow:
    """Calls cudaProfilerStart/Stop around optimizer steps [start_step, start_step + num_steps)
    (`before_step(step)` is given the 0-based index of the step about to run)."""

    def __init__(self, cfg: ProfileConfig, device: torch.device):
        self.start, self.stop = int(cfg.start_step), int(cfg.start_step) + int(cfg.num_steps)
        self.enabled = cfg.num_steps > 0 and device.type == "cuda"
        self.active = False

    def before_step(self, step: int) -> None:
        if not self.enabled:
            return
        if step == self.start and not self.active:
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            self.active = True
        elif step == self.stop and self.active:
            self.close()

    def close(self) -> None:
        if self.active:
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            self.active = False
