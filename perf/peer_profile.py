"""torch.profiler tables per block and per op for perf/peer_anemoi.py `--profile`.

Block ranges: a forward pre-hook opens `fwd/<block>` and a forward hook closes it. Backward
has no module-level hook that works for both networks (anemoi's mappers take a tuple and
keyword tensors, which full backward hooks do not see), so each block's outputs pass through
an identity autograd function whose backward OPENS `bwd/<block>` (the gradient reaches a
block's outputs first), and a multi-grad hook CLOSES it once the gradients of the block's
inputs (its own views of them) and parameters are all computed. The identities cost ~2% of
a tiny backward, nothing at the small shape. Run without activation checkpointing: a
recompute would fire the forward hooks again inside backward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.graph import register_multi_grad_hook
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile


class _Opener(torch.autograd.Function):
    """Identity; its backward calls `event()` first (the block's output gradient arrived)."""

    @staticmethod
    def forward(ctx, event, x):
        ctx.event = event
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.event()
        return None, grad


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _differentiable(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


class _BlockRanges:
    """Forward/backward record_function ranges around `blocks` (name → module)."""

    def __init__(self, blocks: dict[str, nn.Module]):
        self.handles = []
        for name, mod in blocks.items():
            self.handles.append(mod.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self.handles.append(mod.register_forward_hook(self._post(name), with_kwargs=True))
        self.open_fwd: dict[str, record_function] = {}

    def _pre(self, name):
        def hook(mod, args, kwargs):
            rf = record_function(f"fwd/{name}")
            rf.__enter__()
            self.open_fwd[name] = rf
            # this call's own view of each differentiable input: its gradient is this block's
            # contribution alone (an input such as the noise embedding feeds every block)
            mod._peer_inputs = []

            def own_view(t):
                if not _differentiable(t):
                    return t
                mod._peer_inputs.append(t.view_as(t))
                return mod._peer_inputs[-1]
            return _map_tensors(args, own_view), _map_tensors(kwargs, own_view)
        return hook

    def _post(self, name):
        def hook(mod, args, kwargs, output):
            self.open_fwd.pop(name).__exit__(None, None, None)
            if not torch.is_grad_enabled():
                return output
            state = {"rf": None}

            def open_range():
                if state["rf"] is None:
                    state["rf"] = record_function(f"bwd/{name}")
                    state["rf"].__enter__()

            def close_range(_grads):
                if state["rf"] is not None:
                    state["rf"].__exit__(None, None, None)
                    state["rf"] = None
            # closed once the gradients of the block's inputs and parameters are all computed
            done = mod._peer_inputs + [p for p in mod.parameters() if p.requires_grad]
            self.handles.append(register_multi_grad_hook(done, close_range, mode="all"))
            return _map_tensors(output, lambda t: _Opener.apply(open_range, t)
                                if _differentiable(t) else t)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def blocks_of(net: nn.Module, side: str) -> dict[str, nn.Module]:
    if side == "hpcds":
        names = ["noise_embedding", "input_embedding", "hidden_embedding", "encoder",
                 *[f"processor.{i}" for i in range(len(net.processor))], "decoder",
                 *[f"refiner.{i}" for i in range(len(net.refiner))], "head"]
    else:
        names = ["noise_cond_mlp", "encoder",
                 *[f"processor.proc.{i}" for i in range(len(net.processor.proc))], "decoder"]
    modules = dict(net.named_modules())
    return {n: modules[n] for n in names}


def _block_table(prof, prefix: str) -> str:
    events = [e for e in prof.key_averages() if e.key.startswith(prefix)]
    total = sum(e.cpu_time_total for e in events) or 1.0
    lines = [f"  {'block':<24}{'calls':>6}{'CPU ms':>10}{'share':>8}"]
    for e in sorted(events, key=lambda e: -e.cpu_time_total):
        lines.append(f"  {e.key[len(prefix):]:<24}{e.count:>6}{e.cpu_time_total / 1e3:>10.1f}"
                     f"{e.cpu_time_total / total:>8.1%}")
    return "\n".join(lines)


def _settle() -> None:
    """A first range inside a fresh profiler absorbs its start-up (~1-7 ms): give it one."""
    with record_function("profiler-start"):
        torch.zeros(8).add_(1)


def profile_passes(net: nn.Module, x: tuple, side: str, rows: int = 15) -> None:
    """One forward and one backward (after a warm-up pass), each profiled on its own; prints
    the per-block and the per-op (top `rows` by self CPU time) tables of both."""
    net(*x).square().mean().backward()  # warm-up
    net.zero_grad(set_to_none=True)
    ranges = _BlockRanges(blocks_of(net, side))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as pf:
            _settle()
            loss = net(*x).square().mean()
        with profile(activities=[ProfilerActivity.CPU]) as pb:
            _settle()
            loss.backward()
    finally:
        ranges.remove()
    net.zero_grad(set_to_none=True)
    for label, prof, prefix in (("forward", pf, "fwd/"), ("backward", pb, "bwd/")):
        print(f"\n=== {side} {label}: per block ===")
        print(_block_table(prof, prefix))
        print(f"=== {side} {label}: top {rows} ops by self CPU time ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows,
                                        max_name_column_width=48))
