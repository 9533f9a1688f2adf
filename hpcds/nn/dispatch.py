"""One dispatch point per custom op: `get_op(name, backend)` → the implementation.

Every op has a pure-PyTorch `reference` (registered by its module in `hpcds/nn`); fast
backends (`triton`, `native`, in `kernels/`) register themselves under the same op name with
the same signature. Layers resolve their ops ONCE, at construction, from `ModelConfig.backend`:

    attn = get_op("graph_attention", cfg.backend)     # a plain callable

A backend that is not registered, or whose `is_available()` says no (no GPU, no compiled
library), falls back to `reference` with one logged warning per (op, backend). `auto` picks,
per op, the fastest backend available on this machine — on a GPU `triton` (measured fastest on
an H200, perf/results/gpu-20261204-h200.md), then `native`; on a CPU `native` (1.6x the
reference for a demo training step) — and logs the choice once per op.
No global state besides the registry itself; nothing here touches torch.distributed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from hpcds.config.schema import Backend

log = logging.getLogger(__name__)

OPS = ("graph_attention", "window_attention", "modulated_layer_norm", "gated_linear",
       "rms_norm")
REFERENCE = Backend.reference.value


@dataclass(frozen=True)
class _Impl:
    fn: Callable
    is_available: Optional[Callable[[], bool]]


_REGISTRY: dict[str, dict[str, _Impl]] = {op: {} for op in OPS}
_warned: set[tuple[str, str]] = set()


def _backend_name(backend: Backend | str) -> str:
    name = backend.value if isinstance(backend, Backend) else str(backend)
    valid = [b.value for b in Backend]
    if name not in valid:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(valid)}")
    return name


def register(op: str, backend: Backend | str, fn: Callable,
             is_available: Optional[Callable[[], bool]] = None) -> Callable:
    """Register `fn` as `backend`'s implementation of `op` (replacing any earlier one).
    `is_available()` is asked at `get_op` time (e.g. "is there a GPU?"). Returns `fn`."""
    if op not in _REGISTRY:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    _REGISTRY[op][_backend_name(backend)] = _Impl(fn, is_available)
    return fn


def registered(op: str) -> list[str]:
    """Backend names registered for `op` (available or not)."""
    return sorted(_REGISTRY[op])


AUTO = Backend.auto.value


def fast_backends() -> tuple[str, ...]:
    """What `auto` tries, fastest first: the Triton interpreter on a CPU is for tests only."""
    import torch

    return ("triton", "native") if torch.cuda.is_available() else ("native",)


def _available(op: str, name: str) -> bool:
    impl = _REGISTRY[op].get(name)
    return impl is not None and (impl.is_available is None or impl.is_available())


def resolve(op: str, backend: Backend | str) -> str:
    """The backend `get_op` uses for `op`: `backend` itself, or for `auto` the first of
    `fast_backends()` available here (else the reference), logged once per op."""
    name = _backend_name(backend)
    if name != AUTO:
        return name
    chosen = next((b for b in fast_backends() if _available(op, b)), REFERENCE)
    if (op, AUTO) not in _warned:
        _warned.add((op, AUTO))
        log.info("op %s: model.backend=auto uses %s here", op, chosen)
    return chosen


def get_op(op: str, backend: Backend | str = Backend.reference) -> Callable:
    """The implementation of `op` for `backend`, or the reference (warning once) when that
    backend is not registered or not available here."""
    if op not in _REGISTRY:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    name = resolve(op, backend)
    impl = _REGISTRY[op].get(name)
    if _available(op, name):
        return impl.fn
    if REFERENCE not in _REGISTRY[op]:
        raise RuntimeError(f"op {op!r} has no reference implementation registered")
    if (op, name) not in _warned:
        _warned.add((op, name))
        why = "not registered" if impl is None else "not available on this machine"
        log.warning("op %s: backend %r is %s; using the reference implementation",
                    op, name, why)
    return _REGISTRY[op][REFERENCE].fn
