"""DownscalerNet on the tiny preset's grids: shapes, zero-init, gradients, overfitting."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from hpcds.config.load import load_config
from hpcds.grids import make_grid
from hpcds.models import DownscalerNet, build_model_graphs

V, F = 5, 10


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("tiny")
    return cfg, build_model_graphs(cfg.model, make_grid(cfg.grid.hr))


def _inputs(n: int, B: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(B, n, V, generator=gen), torch.randn(B, n, V, generator=gen),
            torch.randn(B, n, F, generator=gen), torch.randn(B, generator=gen))


def _perturb_zero_init(net: torch.nn.Module) -> None:
    """Give the zero-initialised projections (adaLN, output head) small random values."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if torch.all(p == 0):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def test_forward_shape_zero_at_init_and_buffers(tiny):
    cfg, graphs = tiny
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs)
    out = net(*_inputs(graphs.n_hr))
    assert out.shape == (2, graphs.n_hr, V) and out.dtype == torch.float32
    assert torch.all(out == 0)  # every block is the identity and the head is zero
    # graph tensors are buffers (swappable by parallelize.py) but not checkpointed
    buffers = dict(net.named_buffers())
    assert torch.equal(buffers["encoder_senders"], graphs.encoder_senders)
    assert not any("senders" in k or "hidden_features" in k for k in net.state_dict())


def test_gradients_reach_every_parameter(tiny):
    cfg, graphs = tiny
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs)
    _perturb_zero_init(net)
    out = net(*_inputs(graphs.n_hr))
    assert torch.isfinite(out).all() and out.abs().max() > 0
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_activation_checkpointing_gives_the_same_gradients(tiny):
    cfg, graphs = tiny
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs)
    _perturb_zero_init(net)
    cfg_ckpt = load_config("tiny", ["model.activation_checkpointing=true"])
    net_ckpt = DownscalerNet(cfg_ckpt.model, V, F, graphs)
    net_ckpt.load_state_dict(net.state_dict())
    inputs = _inputs(graphs.n_hr, B=1)
    results = []
    for model in (net, net_ckpt):
        out = model(*inputs)
        out.square().mean().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1)


def test_runs_under_bf16_autocast(tiny):
    cfg, graphs = tiny
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs)
    _perturb_zero_init(net)
    inputs = _inputs(graphs.n_hr, B=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(*inputs)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), net(*inputs), rtol=0.1, atol=0.05)


def test_unavailable_backend_falls_back_to_reference(tiny):
    cfg, graphs = tiny
    cfg = load_config("tiny", ["model.backend=triton"])
    net = DownscalerNet(cfg.model, V, F, graphs)
    assert torch.all(net(*_inputs(graphs.n_hr, B=1)) == 0)


def test_overfits_one_fixed_target():
    """A few dozen Adam steps drive the MSE to one fixed random target well down."""
    cfg = load_config("tiny", ["model.hidden_dim=32", "model.num_heads=2", "model.window=8",
                               "grid.hr.name=0.5/0.5", "model.hidden_grid.name=1.0/1.0"])
    graphs = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs)
    x, cond, forcings, c_noise = _inputs(graphs.n_hr, B=1)
    target = torch.randn(1, graphs.n_hr, V, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = (net(x, cond, forcings, c_noise) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def _distributed_uses(source: str, dist_names: bool = True) -> list[int]:
    """Lines that import or touch torch.distributed / mpi4py / (dist_names) a `dist` name
    (code only: docstrings may talk about it)."""
    pattern = r"torch\.distributed|mpi4py" + (r"|^dist$|^dist\." if dist_names else "")
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute):
            names = [ast.unparse(node)]
        elif isinstance(node, ast.Name):
            names = [node.id]
        else:
            continue
        if any(re.search(pattern, n) for n in names):
            lines.append(node.lineno)
    return lines


def test_model_sources_never_call_torch_distributed():
    """Model math is communication-free; sharding comes from outside (docs/architecture.md)."""
    root = Path(__file__).resolve().parents[2] / "hpcds"
    files = sorted([*(root / "nn").glob("*.py"), *(root / "models").glob("*.py")])
    assert len(files) >= 8
    assert _distributed_uses("import torch.distributed as dist\ndist.all_reduce(x)")
    assert _distributed_uses("from torch import distributed")
    offenders = {f.name: lines for f in files if (lines := _distributed_uses(f.read_text()))}
    assert not offenders, offenders


def test_only_hpcds_distributed_touches_torch_distributed_or_mpi4py():
    """Communication lives in hpcds/distributed; everything else calls its verbs. (Outside
    nn/models a local variable may be called `dist`, e.g. a distance, so only imports and
    torch.distributed / mpi4py names count.)"""
    root = Path(__file__).resolve().parents[2] / "hpcds"
    files = [f for f in sorted(root.rglob("*.py"))
             if "distributed" not in f.relative_to(root).parts]
    assert len(files) >= 40 and not _distributed_uses("dist = 1.0", dist_names=False)
    assert _distributed_uses("from mpi4py import MPI", dist_names=False)
    assert _distributed_uses((root / "distributed" / "primitives.py").read_text(),
                             dist_names=False)
    offenders = {str(f.relative_to(root)): lines for f in files
                 if (lines := _distributed_uses(f.read_text(), dist_names=False))}
    assert not offenders, offenders
