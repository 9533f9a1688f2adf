"""The model on the GPU: every backend's forward and gradients against a float64 CPU run of the
same weights, a sampler step against the CPU, a bf16 DeepSpeed ZeRO-1 training step whose loss
matches float32, and the MPI halo transport's host-staging (and CUDA-aware) path on one device."""

from __future__ import annotations

import copy
import socket

import pytest
import torch

from hpcds.config.load import load_config
from hpcds.diffusion.precond import EDMPrecond
from hpcds.diffusion.samplers import heun_sampler
from hpcds.diffusion.schedules import karras_sigmas
from hpcds.grids import make_grid
from hpcds.models import DownscalerNet, build_model_graphs

pytestmark = pytest.mark.gpu

V, F = 2, 1
SMALL = ["grid.hr.name=0.5/0.5", "model.hidden_grid.name=1.5/1.5", "model.hidden_dim=48",
         "model.num_heads=3", "model.window=8", "model.noise_embedding_dim=16"]


@pytest.fixture(scope="module")
def small():
    """(cfg, graphs, net with perturbed zero-init weights on CPU, inputs (B = 2))."""
    cfg = load_config("tiny", SMALL)
    graphs = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    torch.manual_seed(0)
    net = DownscalerNet(cfg.model, V, F, graphs)
    with torch.no_grad():
        for p in net.parameters():
            if torch.all(p == 0):
                p.add_(0.05 * torch.randn(p.shape))
    gen = torch.Generator().manual_seed(1)
    n = graphs.n_hr
    inputs = tuple(torch.randn(2, n, c, generator=gen) for c in (V, V, F)) + (
        torch.randn(2, generator=gen),)
    return cfg, graphs, net, inputs


def _net(cfg, graphs, state, backend: str, ckpt: bool = False):
    m = copy.deepcopy(cfg.model)
    m.backend, m.activation_checkpointing = backend, ckpt
    net = DownscalerNet(m, V, F, graphs)
    net.load_state_dict(state)
    return net


@pytest.mark.parametrize("backend", ["reference", "native", "triton"])
@pytest.mark.parametrize("ckpt", [False, True], ids=["plain", "checkpointed"])
def test_model_forward_and_gradients_match_float64_cpu(small, backend, ckpt, device):
    cfg, graphs, net, inputs = small
    ref_net = _net(cfg, graphs, net.state_dict(), "reference").double()
    out_ref = ref_net(*(t.double() for t in inputs))
    out_ref.square().mean().backward()
    gpu = _net(cfg, graphs, net.state_dict(), backend, ckpt).to(device)
    out = gpu(*(t.to(device) for t in inputs))
    out.square().mean().backward()
    torch.testing.assert_close(out.double().cpu(), out_ref, rtol=1e-4, atol=1e-5)
    ref_grads = dict(ref_net.named_parameters())
    for name, p in gpu.named_parameters():
        torch.testing.assert_close(p.grad.double().cpu(), ref_grads[name].grad, rtol=1e-3,
                                   atol=1e-5, msg=name)


def test_bf16_autocast_loss_matches_float32(small, device):
    """bf16 autocast (what training uses on CUDA) against float32: the mean-square output
    agrees to 2% (bf16 has 8 significant bits; the network is ~10 matmuls deep)."""
    cfg, graphs, net, inputs = small
    gpu = _net(cfg, graphs, net.state_dict(), "native").to(device)
    x = tuple(t.to(device) for t in inputs)
    with torch.no_grad():
        f32 = gpu(*x).square().mean()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = gpu(*x).float().square().mean()
    assert abs(float(bf16) / float(f32) - 1) < 2e-2, (float(bf16), float(f32))


def test_sampler_step_on_gpu_matches_cpu(small, device):
    """Two Heun steps (float64 solver state) with the native model on the GPU against the
    reference model on the CPU, same latents and noise."""
    cfg, graphs, net, inputs = small
    _, cond, forcings, _ = inputs
    sigmas = karras_sigmas(2, 0.02, 80.0)
    latents = torch.randn(2, graphs.n_hr, V, generator=torch.Generator().manual_seed(3),
                          dtype=torch.float64) * sigmas[0]
    noise = lambda i: torch.zeros_like(latents)  # noqa: E731  (no churn: deterministic)
    results = []
    for dev, backend in (("cpu", "reference"), (device, "native")):
        model = EDMPrecond(_net(cfg, graphs, net.state_dict(), backend).to(dev),
                           cfg.diffusion.sigma_data)
        den = model.as_denoiser(cond.to(dev), forcings.to(dev))
        with torch.no_grad():
            results.append(heun_sampler(den, latents.to(dev), sigmas.to(dev),
                                        noise_fn=lambda i: noise(i).to(dev)).cpu())
    assert results[1].dtype == torch.float64
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deepspeed_zero1_bf16_step_loss_matches_float32(small, device, monkeypatch):
    """One ZeRO-1 bf16 step through the trainer's DeepSpeedStepper (one rank, NCCL): its loss
    equals the float32 model's on the same batch to 2%, and the update moved the weights."""
    pytest.importorskip("deepspeed")
    import torch.distributed as dist

    from hpcds.train.engine import DeepSpeedStepper
    from hpcds.train.parallel import TrainParallel

    cfg, graphs, net, inputs = small
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(k, v)
    if not dist.is_initialized():
        dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        cfg = copy.deepcopy(cfg)
        cfg.parallel.use_deepspeed, cfg.parallel.zero_stage = True, 1
        tp = TrainParallel.setup(cfg)
        x = tuple(t.to(device) for t in inputs)
        f32 = _net(cfg, graphs, net.state_dict(), "native").to(device)
        with torch.no_grad():
            loss32 = f32(*x).square().mean()
        model = _net(cfg, graphs, net.state_dict(), "native").to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        stepper = DeepSpeedStepper(model, opt, tp, cfg, 1, device)
        before = [p.detach().float().clone() for p in model.parameters()]
        with torch.autocast("cuda", dtype=torch.bfloat16):  # as the trainer calls the net
            loss = model(*x).float().square().mean()
        stepper.backward(loss, 1)
        norm = stepper.step()
        assert abs(float(loss) / float(loss32) - 1) < 2e-2, (float(loss), float(loss32))
        assert torch.isfinite(torch.as_tensor(norm)).all()
        moved = sum(int(not torch.equal(b, p.detach().float()))
                    for b, p in zip(before, model.parameters()))
        assert moved > 0
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("cuda_aware", [False, True], ids=["host-staging", "cuda-aware"])
def test_mpi_halo_transport_on_one_device(cuda_aware, device):
    """MpiTransport on COMM_SELF: a CUDA tensor sent to this rank arrives in a CUDA buffer,
    through pinned host buffers (host staging) or directly (CUDA-aware MPI, where the MPI
    library says it is)."""
    mpi4py = pytest.importorskip("mpi4py")
    try:
        from mpi4py import MPI
    except Exception as err:  # no MPI library behind mpi4py
        pytest.skip(f"mpi4py {mpi4py.__version__} has no usable MPI library: {err}")
    from hpcds.distributed import primitives as prim
    from hpcds.distributed.transport import MpiTransport

    if cuda_aware and not prim.mpi_cuda_aware():
        pytest.skip("this MPI library is not CUDA-aware")
    transport = MpiTransport(MPI.COMM_SELF, cuda_aware=cuda_aware)
    send = torch.arange(4096, dtype=torch.float32, device=device).reshape(64, 64) * 0.5
    recv = torch.full_like(send, -1.0)
    transport.exchange([(0, send)], [(0, recv)])
    torch.cuda.synchronize()
    assert recv.device.type == "cuda" and torch.equal(recv, send)
