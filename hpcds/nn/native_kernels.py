"""The native kernels (kernels/cuda/, built by CMake): finding the compiled modules and the
launchers that feed them torch tensors.

The modules are nanobind extensions that take DLPack arrays and fill caller-allocated
outputs, so every buffer here is a torch tensor (torch's allocator, torch's current CUDA
stream) and the modules never link libtorch. Where they are looked for, in order:
`$HPCDS_NATIVE_DIR`, then `build/native/` at the repository root (what `scripts/setup.sh`
builds). `_hpcds_native` (CPU) is required for the backend; `_hpcds_native_cuda` only for
CUDA tensors.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from hpcds.nn.fused_ops import acc_dtype

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "kernels" / "cuda"
# LayerNorm backward: rows per partial (dscale, dshift) row; the partials cost
# B·⌈N/rows⌉·C·4 bytes and their reduction is one torch sum over chunks
LN_ROWS_PER_CHUNK = 256


def library_dirs() -> list[Path]:
    dirs = [Path(os.environ["HPCDS_NATIVE_DIR"])] if os.environ.get("HPCDS_NATIVE_DIR") else []
    return dirs + [REPO / "build" / "native"]


def _find(name: str) -> Path | None:
    for d in library_dirs():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (d / (name + suffix)).is_file():
                return d / (name + suffix)
    return None


@cache
def load_module(name: str) -> ModuleType:
    """Import the compiled module `name` (cached); ImportError says how to build it."""
    path = _find(name)
    if path is None:
        raise ImportError(f"{name} is not built (looked in "
                          f"{', '.join(map(str, library_dirs()))}); run `bash scripts/setup.sh`")
    if SOURCES.is_dir():
        # the CPU module is not built from .cu files: an edit there does not make it stale
        cuda = name.endswith("_cuda")
        newest = max((p.stat().st_mtime for p in SOURCES.iterdir()
                      if cuda or p.suffix != ".cu"), default=0.0)
        if newest > path.stat().st_mtime:
            log.warning("%s is older than the sources in %s: rebuild with "
                        "`bash scripts/setup.sh`", path, SOURCES)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def is_available() -> bool:
    """The CPU module loads, and the CUDA one too when torch sees a GPU."""
    try:
        load_module("_hpcds_native")
        if torch.cuda.is_available():
            load_module("_hpcds_native_cuda")
        return True
    except ImportError as err:
        log.info("native kernels unavailable: %s", err)
        return False


def _module_and_exec(t: torch.Tensor) -> tuple[ModuleType, int]:
    """The module for t's device and its execution argument: OpenMP threads (torch's own
    intra-op setting, so torch.set_num_threads governs both) or the current CUDA stream."""
    if t.device.type == "cuda":
        return load_module("_hpcds_native_cuda"), torch.cuda.current_stream(t.device).cuda_stream
    if t.device.type == "cpu":
        return load_module("_hpcds_native"), torch.get_num_threads()
    raise RuntimeError(f"native kernels run on CPU or CUDA tensors, not {t.device}")


def _d(*ts: torch.Tensor):
    """Tensors as DLPack exporters: DLPack refuses tensors that require grad."""
    return [t.detach() for t in ts]


class NativeKernels:
    """Launchers for `fused_ops` (see `GraphAttentionKernels`, `LayerNormKernels`)."""

    @staticmethod
    def compute_dtype(dtype: torch.dtype) -> torch.dtype:
        # the library is built for float32 and float64; bf16/fp16 compute in float32
        return torch.float64 if dtype == torch.float64 else torch.float32

    def graph_attention_forward(self, q, k, v, bias, senders, receivers, rowptr):
        mod, exe = _module_and_exec(q)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:3], dtype=acc_dtype(q.dtype), device=q.device)
        mod.graph_attention_forward(*_d(q, k, v, bias, senders, receivers, rowptr, out, lse),
                                   exe)
        return out, lse

    def graph_attention_backward(self, dout, q, k, v, bias, senders, receivers, rowptr, out,
                                 lse):
        mod, exe = _module_and_exec(q)
        n_src, E = k.shape[1], senders.shape[0]
        if q.device.type == "cpu":  # O(E) counting sort (int32 or int64 senders)
            perm = torch.empty(E, dtype=torch.int64)
            colptr = torch.empty(n_src + 1, dtype=torch.int64)
            mod.csc_order(senders.detach(), n_src, perm, colptr)
        else:  # a GPU radix sort; perm and colptr int64 whatever the senders' dtype
            perm = torch.argsort(senders, stable=True)
            colptr = torch.searchsorted(senders[perm], torch.arange(
                n_src + 1, device=q.device, dtype=senders.dtype))
        acc = acc_dtype(q.dtype)
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        p = torch.empty((q.shape[0], E, q.shape[2]), dtype=acc, device=q.device)
        ds = torch.empty_like(p)
        mod.graph_attention_backward(*_d(q, k, v, bias, senders, receivers, rowptr, perm, colptr,
                                         out, dout, lse, dq, dk, dv, p, ds), exe)
        return dq, dk, dv, ds

    def layer_norm_forward(self, x, scale, shift, eps):
        mod, exe = _module_and_exec(x)
        y = torch.empty_like(x)
        mean = torch.empty(x.shape[:2], dtype=acc_dtype(x.dtype), device=x.device)
        rstd = torch.empty_like(mean)
        mod.layer_norm_forward(*_d(x, scale, shift, y, mean, rstd), eps, exe)
        return y, mean, rstd

    def layer_norm_backward(self, dy, x, scale, mean, rstd):
        mod, exe = _module_and_exec(x)
        B, N, C = x.shape
        chunks = -(-N // LN_ROWS_PER_CHUNK)
        dx = torch.empty_like(x)
        part = torch.empty((2, B, chunks, C), dtype=mean.dtype, device=x.device)
        mod.layer_norm_backward(*_d(x, scale, dy, mean, rstd, dx, part[0], part[1]),
                                LN_ROWS_PER_CHUNK, exe)
        # two separate sums: outputs of a custom op must not alias each other
        return dx, part[0].sum(1).to(scale.dtype), part[1].sum(1).to(scale.dtype)
