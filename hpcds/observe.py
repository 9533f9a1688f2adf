"""Named ranges for Nsight and the torch profiler, and the Nsight capture window.

    with trace_range("optimizer"):          # an NVTX range on this thread (nvtx package: a
        optimizer.step()                    # no-op without a GPU tool attached), plus a
                                            # torch.profiler label while a profiler runs

Every range of the package goes through `trace_range`, with one of these names:

  training step   data → loss (the forward: σ and noise, EDMPrecond, the network, the
                  weighted MSE; per micro-batch) → backward (per micro-batch) → optimizer
                  (gradient reduction, clipping, AdamW, schedule, EMA; under DeepSpeed also
                  after each backward: its engine.step(), where the update happens)
  inside loss     encoder (with the input and hidden embeddings), processor, decoder,
                  refiner: the network's components (hpcds/models/downscaler.py; the small
                  output head is in none), each with its halo_exchange ranges when the
                  model is sharded
  halo_exchange   every halo exchange, forward (own rows → extended rows) and backward (the
                  halo rows' gradients back to their owners): the custom op hpcds::halo_exchange
                  (hpcds/distributed/autograd.py), the one place they all go through
  sampling        sampler_step (one solver step: its one or two network evaluations),
                  write (ensemble members to the output store)

Backward: the autograd engine runs a block's backward outside the forward's ranges, so under
"backward" appear only halo_exchange (the adjoint exchanges) and, with
`model.activation_checkpointing`, the recomputed blocks, labelled with their component
(encoder, processor, …) and their own halo_exchange inside. On a GPU the autograd engine
runs backward on its own thread: those ranges then sit on that thread's row in Nsight, not
nested under the main thread's "backward".

Cost: ~1 µs per range when nothing listens (`nvtx.push_range`/`pop_range` ~0.25 µs, the
rest is Python; no host sync). `torch.cuda.nvtx` raises on CPU builds of torch, so the
standalone `nvtx` package is used; `record_function` (~7 µs) is entered only while a torch
profiler runs. While torch.compile traces (`model.compile`) a range is a no-op: the compiled
graph fuses across the components, so encoder … refiner do not appear for a compiled network;
halo_exchange still does (it runs inside the halo custom op, outside the graph's code).

`CaptureWindow(cfg.profile)` starts the CUDA profiler before step `start_step` and stops it
after `num_steps` steps, so `nsys --capture-range=cudaProfilerApi` (launch/profile.sh)
records only steady-state steps; without CUDA it does nothing.
"""

from __future__ import annotations

import contextlib

import nvtx
import torch
from torch.autograd.profiler import record_function

from hpcds.config.schema import ProfileConfig

DOMAIN = "hpcds"
RANGES = ("data", "loss", "backward", "optimizer", "encoder", "processor", "decoder",
          "refiner", "halo_exchange", "sampler_step", "write")


class _Range:
    """One NVTX push/pop pair on the calling thread (a class, not @contextmanager: ~3×
    cheaper), with a torch.profiler label only while a torch profiler is running."""

    __slots__ = ("name", "label")

    def __init__(self, name: str):
        self.name, self.label = name, None

    def __enter__(self) -> None:
        nvtx.push_range(self.name, domain=DOMAIN)
        if torch._C._autograd._profiler_enabled():
            self.label = record_function(self.name)
            self.label.__enter__()

    def __exit__(self, *exc) -> None:
        if self.label is not None:
            self.label.__exit__(*exc)
        nvtx.pop_range(domain=DOMAIN)


def trace_range(name: str):
    """A context manager: the NVTX range `name` (domain "hpcds") around its body. While
    torch.compile traces, a no-op (nvtx calls would break the graph)."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _Range(name)


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
