"""Registers the fused backends (`triton`, `native`) of graph_attention and
modulated_layer_norm with the dispatch, lazily: importing this module (done by `hpcds.nn`)
imports neither triton nor the compiled library, and never fails when they are missing.

The first `get_op(op, backend)` asks the backend's `is_available()`, which loads it:
  - triton: `import triton`, then the kernel sources in kernels/triton/ (the repository's, or
    `$HPCDS_KERNELS_DIR/triton`); launches need a CUDA device or TRITON_INTERPRET=1 (the
    interpreter: correct on CPU tensors, ~3 ms per program instance — for tests);
  - native: the compiled nanobind modules (hpcds/nn/native_kernels.py).
Both then define their `torch.library` custom ops once per process (hpcds/nn/fused_ops.py).
When a backend cannot load, the reason is logged once and `get_op` falls back to the reference.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from hpcds.nn.dispatch import register
from hpcds.nn.fused_ops import define_graph_attention, define_modulated_layer_norm

log = logging.getLogger(__name__)

KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def kernels_dir() -> Path:
    return Path(os.environ.get("HPCDS_KERNELS_DIR", KERNELS))


def _load_source(name: str, path: Path) -> ModuleType:
    """Import a kernel source file as module `hpcds_kernels.<name>` (Triton's @jit reads the
    source back, so it must be a real module with a __file__)."""
    full = f"hpcds_kernels.{name}"
    spec = importlib.util.spec_from_file_location(full, path)
    if spec is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


class TritonKernels:
    """Launchers for `fused_ops` from kernels/triton/."""

    def __init__(self, ga: ModuleType, ln: ModuleType):
        self.graph_attention_forward = ga.forward
        self.graph_attention_backward = ga.backward
        self.layer_norm_forward = ln.forward
        self.layer_norm_backward = ln.backward

    @staticmethod
    def compute_dtype(dtype: torch.dtype) -> torch.dtype:
        # Triton loads bf16/fp16/fp32/fp64 directly and accumulates in fp32 (fp64 for fp64)
        return dtype if dtype.is_floating_point else torch.float32


# backend name → its ops once loaded, or None once it failed to load
_LOADED: dict[str, SimpleNamespace | None] = {}


def _load_triton() -> SimpleNamespace | None:
    try:
        import triton  # noqa: F401  (a clear error if the package is missing)
        src = kernels_dir() / "triton"
        kernels = TritonKernels(_load_source("triton_graph_attention", src / "graph_attention.py"),
                                _load_source("triton_layer_norm", src / "layer_norm.py"))
    except Exception as err:  # ImportError, a missing file, a triton API change
        log.warning("triton kernels unavailable: %s: %s", type(err).__name__, err)
        return None
    return SimpleNamespace(graph_attention=define_graph_attention("triton", kernels),
                           modulated_layer_norm=define_modulated_layer_norm("triton", kernels))


def _load_native() -> SimpleNamespace | None:
    from hpcds.nn import native_kernels

    if not native_kernels.is_available():  # logs why
        return None
    kernels = native_kernels.NativeKernels()
    return SimpleNamespace(graph_attention=define_graph_attention("native", kernels),
                           modulated_layer_norm=define_modulated_layer_norm("native", kernels))


def _ops(backend: str) -> SimpleNamespace | None:
    """The backend's ops, loaded (custom ops defined) on first use; None if unavailable."""
    if backend not in _LOADED:
        _LOADED[backend] = {"triton": _load_triton, "native": _load_native}[backend]()
    return _LOADED[backend]


def _require(backend: str) -> SimpleNamespace:
    ops = _ops(backend)
    if ops is None:
        raise RuntimeError(f"the {backend} kernels are not available here (see the log); "
                           f"select them through hpcds.nn.get_op to fall back to the reference")
    return ops


def triton_available() -> bool:
    """Loadable, and runnable now: a CUDA device, or the interpreter asked for. The second part
    is asked on every call (not cached), so a test that sets TRITON_INTERPRET=1 for itself
    does not make later CPU models run through the interpreter."""
    if not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
        log.debug("triton kernels unavailable: no CUDA device and TRITON_INTERPRET is not 1")
        return False
    return _ops("triton") is not None


def native_available() -> bool:
    return _ops("native") is not None


# Thin entry points with the references' signatures: what the dispatch hands to layers. They
# read the loaded ops from a plain dict, which torch.compile traces without a graph break.
def graph_attention_triton(q, k, v, edge_bias, senders, receivers, n_dst):
    ops = _LOADED.get("triton") or _require("triton")
    return ops.graph_attention(q, k, v, edge_bias, senders, receivers, n_dst)


def modulated_layer_norm_triton(x, scale, shift):
    ops = _LOADED.get("triton") or _require("triton")
    return ops.modulated_layer_norm(x, scale, shift)


def graph_attention_native(q, k, v, edge_bias, senders, receivers, n_dst):
    ops = _LOADED.get("native") or _require("native")
    return ops.graph_attention(q, k, v, edge_bias, senders, receivers, n_dst)


def modulated_layer_norm_native(x, scale, shift):
    ops = _LOADED.get("native") or _require("native")
    return ops.modulated_layer_norm(x, scale, shift)


register("graph_attention", "triton", graph_attention_triton, triton_available)
register("modulated_layer_norm", "triton", modulated_layer_norm_triton, triton_available)
register("graph_attention", "native", graph_attention_native, native_available)
register("modulated_layer_norm", "native", modulated_layer_norm_native, native_available)
