"""Shared test settings."""

from __future__ import annotations

import os
import threading
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


class NvtxRecorder:
    """Stands in for `nvtx.push_range` / `nvtx.pop_range` (what hpcds.observe.trace_range
    calls) and records (thread, "push"/"pop", name, domain) per call, so tests can check
    which ranges a run opens, how they nest, and that every one is closed on its thread."""

    def __init__(self):
        self.events: list[tuple[int, str, str | None, str | None]] = []

    def push_range(self, message=None, color=None, domain=None, category=None, payload=None):
        self.events.append((threading.get_ident(), "push", message, domain))

    def pop_range(self, domain=None):
        self.events.append((threading.get_ident(), "pop", None, domain))

    def trees(self) -> dict[int, list]:
        """{thread: [(name, [children…]), …]}; asserts every push is popped, on its own
        thread and domain, and nothing else is popped."""
        stacks: dict[int, list] = {}
        for tid, kind, name, domain in self.events:
            stack = stacks.setdefault(tid, [("<thread>", [], None)])
            if kind == "push":
                node = (name, [], domain)
                stack[-1][1].append(node)
                stack.append(node)
            else:
                assert len(stack) > 1, f"thread {tid}: pop without a push"
                assert stack[-1][2] == domain, f"{stack[-1][0]} popped in domain {domain}"
                stack.pop()
        for tid, stack in stacks.items():
            assert len(stack) == 1, f"thread {tid}: ranges left open {[s[0] for s in stack]}"
        return {tid: _strip(stack[0][1]) for tid, stack in stacks.items()}

    @staticmethod
    def names(nodes) -> list[str]:
        """The names of a list of (name, children) nodes, in order."""
        return [name for name, _ in nodes]

    @classmethod
    def find(cls, nodes, name: str) -> list:
        """Every node called `name` at any depth, in order (outer before inner)."""
        found = []
        for n, children in nodes:
            if n == name:
                found.append((n, children))
            found += cls.find(children, name)
        return found


def _strip(nodes) -> list:
    return [(name, _strip(children)) for name, children, _ in nodes]


@pytest.fixture
def nvtx_ranges(monkeypatch):
    """Records the NVTX ranges trace_range opens (see NvtxRecorder)."""
    import nvtx

    rec = NvtxRecorder()
    monkeypatch.setattr(nvtx, "push_range", rec.push_range)
    monkeypatch.setattr(nvtx, "pop_range", rec.pop_range)
    return rec


@pytest.fixture
def tiny_model():
    """A small DownscalerNet (1° HR over the Alps, 1.5° hidden, width 8; zero-initialised
    gates and head perturbed so every block contributes), B = 2 random inputs and its
    unsharded output: (cfg, graphs, model, (x, cond, forcings, c_noise), output)."""
    from hpcds.config.load import load_config
    from hpcds.grids import make_grid
    from hpcds.models import DownscalerNet, build_model_graphs

    cfg = load_config("tiny", ["grid.hr.name=1.0/1.0", "model.hidden_grid.name=1.5/1.5",
                               "model.hidden_dim=8", "model.num_heads=2", "model.window=8",
                               "model.noise_embedding_dim=8"])
    graphs = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    torch.manual_seed(0)
    model = DownscalerNet(cfg.model, 2, 1, graphs)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.add_(0.05 * torch.randn(p.shape))
    gen = torch.Generator().manual_seed(1)
    n = graphs.n_hr
    inputs = tuple(torch.randn(2, n, c, generator=gen) for c in (2, 2, 1)) + (
        torch.randn(2, generator=gen),)
    with torch.no_grad():
        output = model(*inputs)
    return cfg, graphs, model, inputs, output
