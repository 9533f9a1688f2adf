"""The learned skip filter S_σ (hpcds/nn/skip_filter.py): its formula against a float64 loop,
its invariants, and the whole preconditioned denoiser D = c_skip·S_σ(x) + c_out·F sharded
over P = 2 and 3 uneven in-process ranks equal to one process (outputs, input gradients and
every parameter gradient summed over ranks), in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from shard_asserts import assert_shards_equal_one_process

from hpcds.config.load import load_config
from hpcds.diffusion.precond import EDMPrecond
from hpcds.distributed import ShardContext
from hpcds.grids import make_grid
from hpcds.models import DownscalerNet, build_model_graphs
from hpcds.models.parallelize import parallelize_model
from hpcds.nn import LocalSkipFilter


def _perturb(module, scale=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_filter_matches_float64_loop():
    torch.manual_seed(0)
    f = LocalSkipFilter(n_vars=3, edge_dim=2, emb_dim=4).double()
    _perturb(f, 0.5)
    senders = torch.tensor([0, 1, 2, 1, 0, 2, 3])
    receivers = torch.tensor([0, 0, 1, 1, 2, 3, 3])
    attr = torch.randn(7, 2, dtype=torch.float64)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    emb = torch.randn(2, 4, dtype=torch.float64)
    sigma = torch.tensor([0.003, 0.2], dtype=torch.float64)
    out = f(x, sigma, emb, senders, receivers, attr)
    s2 = (2 * f.log_s).exp()
    w = f.weights(emb, attr) * (sigma[:, None, None] ** 2 / (sigma[:, None, None] ** 2 + s2))
    ref = x.clone()
    for b in range(2):
        for e in range(7):
            s, r = int(senders[e]), int(receivers[e])
            ref[b, r] += w[b, e] * (x[b, s] - x[b, r])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # constants pass unchanged whatever the weights; zero-initialised: the identity
    const = torch.full_like(x, 3.25)
    torch.testing.assert_close(f(const, sigma, emb, senders, receivers, attr), const)
    fresh = LocalSkipFilter(3, 2, 4).double()
    torch.testing.assert_close(fresh(x, sigma, emb, senders, receivers, attr), x, rtol=0, atol=0)
    # σ → 0: the identity (the Wiener gain's limit), whatever the weights
    tiny = torch.full((2,), 1e-9, dtype=torch.float64)
    torch.testing.assert_close(f(x, tiny, emb, senders, receivers, attr), x, rtol=0, atol=1e-12)


def _denoiser():
    cfg = load_config("tiny", ["grid.hr.name=1.0/1.0", "model.hidden_grid.name=1.5/1.5",
                               "model.hidden_dim=8", "model.num_heads=2", "model.window=8",
                               "model.noise_embedding_dim=8", "model.skip_filter=true"])
    graphs = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, 2, 1, graphs).double()
    _perturb(net, 0.05)
    return EDMPrecond(net, sigma_data=1.0), graphs.n_hr


def _run(d, x, sigma, cond, forc, w):
    d.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = d(x, sigma, cond, forc)
    (out * w).sum().backward()
    return out.detach(), x.grad, {k: p.grad for k, p in d.named_parameters()}


def test_skip_filter_changes_the_denoiser_and_starts_as_identity():
    d, n = _denoiser()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, n, 2, generator=gen, dtype=torch.float64)
    cond = torch.randn(2, n, 2, generator=gen, dtype=torch.float64)
    forc = torch.randn(2, n, 1, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.5], dtype=torch.float64)
    without = copy.deepcopy(d)
    without.backbone.skip_filter = None
    with torch.no_grad():
        assert (d(x, sigma, cond, forc) - without(x, sigma, cond, forc)).abs().max() > 1e-3
        torch.nn.init.zeros_(d.backbone.skip_filter.out.weight)
        torch.nn.init.zeros_(d.backbone.skip_filter.out.bias)
        torch.testing.assert_close(d(x, sigma, cond, forc), without(x, sigma, cond, forc),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("P", [2, 3])
def test_sharded_denoiser_with_skip_filter_equals_one_process(thread_ranks, P):
    d, n = _denoiser()
    gen = torch.Generator().manual_seed(2)
    x, cond, w = (torch.randn(2, n, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    forc = torch.randn(2, n, 1, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.02, 3.0], dtype=torch.float64)
    out, gx, grads = _run(copy.deepcopy(d), x, sigma, cond, forc, w)
    ranges = {2: [(0, 17), (17, n)], 3: [(0, 9), (9, n - 25), (n - 25, n)]}[P]

    def rank(r, transport):
        local = copy.deepcopy(d)
        shard = parallelize_model(local.backbone, ShardContext(r, P, None, transport), n_hr=n,
                                  hr_ranges=ranges)
        assert "refiner" in shard.plans  # the filter's halo is the refiner graph's
        rows = shard.hr
        return _run(local, x[:, rows], sigma, cond[:, rows], forc[:, rows], w[:, rows])

    assert_shards_equal_one_process(thread_ranks(P, rank), out, gx, grads)
