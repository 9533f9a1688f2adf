"""One model-parallel shard of a config on one device: forward + backward, a sampler step, and
the planner's memory estimate against what the allocator measured.

    python perf/gpu_shard.py                       # 4km, 48-way: one rank's real sizes, bf16
    python perf/gpu_shard.py --shards 32 --backends native
    python perf/gpu_shard.py --dry-run             # CPU: the same steps at toy sizes (CI)

The shard is the largest of P (`hpcds.plan.memory.shard_shape`): its HR rows, hidden rows,
edges per graph and halo rows. The network is the real `DownscalerNet` of the config (every
block, activation checkpointing and graph pieces as configured) in bf16 weights, as DeepSpeed
holds them, on random SFC-local graphs of those sizes; halo exchanges are stood in for by
appending the halo's rows (zeros), so the compute and memory are a rank's, without the wire.
Per backend (`native`, `triton`, `reference`), median of `--repeat` after one warm-up:
  fwd+bwd    one training forward and backward (loss = mean square output), time and
             torch.cuda.max_memory_allocated, against the planner's terms for what is live
             (weights, gradients, activations, recompute, backward workspace, graph, inputs,
             halo buffers; no optimizer state or EMA: no optimizer step is taken);
  sampler    one Heun step: two denoiser forwards without grad at sampling.members_per_batch.
--dry-run shrinks the width (32 channels, 2 layers, window 16) and every row count by
`--scale` and runs on the CPU in float32: the steps and the record, not the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import decoder_graph, median_seconds  # noqa: E402  (perf/kernels.py)
from machine import machine_info  # noqa: E402

from hpcds.config.load import load_config  # noqa: E402
from hpcds.data.forcings import FORCING_NAMES  # noqa: E402
from hpcds.models import DownscalerNet  # noqa: E402
from hpcds.models.graphs import ModelGraphs  # noqa: E402
from hpcds.nn import GraphAttentionBlock, WindowAttentionBlock  # noqa: E402
from hpcds.plan.activations import EDGE_ATTR_DIM, HIDDEN_FEATURE_DIM, ShardShape, _MetaHalo  # noqa: E402,E501
from hpcds.plan.memory import GIB, plan_layout, shard_shape  # noqa: E402

DRY_MODEL = ["model.hidden_dim=32", "model.num_heads=2", "model.processor_layers=2",
             "model.window=16", "model.noise_embedding_dim=16", "model.graph_block_rows=512"]
# the planner's terms that are live during a forward + backward without an optimizer step
LIVE_TERMS = ("weights", "gradients", "activations", "activation recompute",
              "backward workspace", "graph", "inputs", "halo buffers")


def scaled(shape: ShardShape, s: float) -> ShardShape:
    n = lambda x: max(8, int(x * s))  # noqa: E731
    return dataclasses.replace(
        shape, n_hr=n(shape.n_hr), n_hidden=n(shape.n_hidden),
        edges={g: int(e / shape.n_hr * n(shape.n_hr)) for g, e in shape.edges.items()},
        halo={g: (min(a, n(a)), min(b, n(b))) for g, (a, b) in shape.halo.items()})


def encoder_graph(n_hr: int, n_hidden: int, k: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Every HR node sends to k hidden nodes near its position in the shared SFC order,
    sorted by receiver (uneven in-degrees, some hidden nodes without edges)."""
    senders = torch.arange(n_hr).repeat_interleave(k)
    centre = senders * n_hidden // n_hr
    receivers = (centre + torch.randint(-2, 3, centre.shape, generator=gen)).clamp(0, n_hidden - 1)
    order = torch.argsort(receivers, stable=True)
    return senders[order], receivers[order]


def shard_graphs(shape: ShardShape, cfg, gen) -> ModelGraphs:
    """Random SFC-local graphs of the shard's sizes; senders index the halo-extended source
    rows (the left halo first), receivers the local destination rows."""
    m, left = cfg.model, {g: shape.halo.get(g, (0, 0))[0] for g in shape.edges}
    pairs = {"encoder": encoder_graph(shape.n_hr, shape.n_hidden, int(m.encoder_knn), gen),
             "decoder": decoder_graph(shape.n_hr, shape.n_hidden, int(m.decoder_knn), gen),
             "refiner": decoder_graph(shape.n_hr, shape.n_hr, int(m.refiner_knn), gen)}
    values = {}
    for g, (snd, rcv) in pairs.items():
        values[f"{g}_senders"] = (snd + left[g]).to(torch.int32)
        values[f"{g}_receivers"] = rcv.to(torch.int32)
        values[f"{g}_edge_attr"] = torch.randn(snd.numel(), EDGE_ATTR_DIM, generator=gen)
        values[f"{g}_length_scale"] = 1.0
    return ModelGraphs(**values, hidden_features=torch.randn(shape.n_hidden, HIDDEN_FEATURE_DIM,
                                                             generator=gen),
                       n_hr=shape.n_hr, n_hidden=shape.n_hidden)


def build_net(cfg, shape: ShardShape, backend: str, device, dtype, gen) -> DownscalerNet:
    m = dataclasses.replace(cfg.model, backend=backend)
    net = DownscalerNet(m, len(cfg.data.variables), len(FORCING_NAMES),
                        shard_graphs(shape, cfg, gen))
    for name, module in net.named_modules():
        if isinstance(module, WindowAttentionBlock):
            module.halo = _MetaHalo(*shape.halo.get("window", (0, 0)))
        elif isinstance(module, GraphAttentionBlock):
            module.halo = _MetaHalo(*shape.halo.get(name.split(".")[0], (0, 0)))
    with torch.no_grad():  # every block active: perturb the zero-initialised projections
        for p in net.parameters():
            if torch.all(p == 0):
                p.normal_(0.0, 0.02, generator=gen)
    return net.to(device, dtype)


def peak(device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_backend(cfg, shape: ShardShape, backend: str, device, dtype, repeat: int,
                predicted: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    reset_peak(device)
    net = build_net(cfg, shape, backend, device, dtype, gen)
    V, F, B = net.n_vars, net.n_forcings, shape.batch
    x, cond = (torch.randn(B, shape.n_hr, V, generator=gen).to(device, dtype) for _ in range(2))
    forcings = torch.randn(B, shape.n_hr, F, generator=gen).to(device, dtype)
    c_noise = torch.zeros(B, device=device)

    def train_step():
        net.zero_grad(set_to_none=False)  # gradients stay allocated, as in training
        net(x, cond, forcings, c_noise).float().square().mean().backward()

    fwd_bwd = median_seconds(train_step, 1, repeat, device, f"shard.{backend}.fwd_bwd")
    measured = peak(device)
    del x, cond, forcings
    for p in net.parameters():
        p.grad = None
    M = int(cfg.sampling.members_per_batch)
    xs, cs = (torch.randn(M, shape.n_hr, V, generator=gen).to(device, dtype) for _ in range(2))
    fs = torch.randn(M, shape.n_hr, F, generator=gen).to(device, dtype)

    def sampler_step():  # Heun: two denoiser evaluations (the noise-level bookkeeping is O(N))
        with torch.no_grad():
            for _ in range(2):
                net(xs, cs, fs, torch.zeros(M, device=device))

    reset_peak(device)
    sampler = median_seconds(sampler_step, 1, repeat, device, f"shard.{backend}.sampler")
    row = dict(backend=backend, fwd_bwd_ms=fwd_bwd * 1e3, sampler_step_ms=sampler * 1e3,
               sampler_members=M, peak_fwd_bwd_gib=measured / GIB,
               peak_sampler_gib=peak(device) / GIB, predicted_fwd_bwd_gib=predicted / GIB,
               measured_over_predicted=(measured / predicted) if measured else None)
    del net, xs, cs, fs
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="4km")
    ap.add_argument("--shards", type=int, default=None, help="P (default parallel.model_parallel)")
    ap.add_argument("--backends", default="native,triton,reference")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes (see the docstring)")
    ap.add_argument("--scale", type=float, default=1e-4, help="row scale of --dry-run")
    ap.add_argument("--json", type=Path, default=None, help="write the rows and shape here")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, DRY_MODEL if args.dry_run else [])
    P = args.shards or int(cfg.parallel.model_parallel)
    D = int(cfg.parallel.ensemble_groups or 1)
    if args.dry_run:
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        print("gpu_shard: error: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
    shape = shard_shape(cfg, P)
    if args.dry_run:
        shape = scaled(shape, args.scale)
    plan = plan_layout(cfg, P * D, 141 * 10**9, D, shape=shape)
    predicted = sum(plan.terms[t] for t in LIVE_TERMS)
    print(f"{args.config}: one of {P} shards: {shape.n_hr:,} HR rows, {shape.n_hidden:,} hidden, "
          f"edges {shape.edges}, halo {shape.halo}; {plan.n_params / 1e6:.1f} M parameters; "
          f"{device} {str(dtype).removeprefix('torch.')}; planner (live terms) "
          f"{predicted / GIB:.2f} GiB", flush=True)
    rows = []
    for backend in args.backends.split(","):
        row = run_backend(cfg, shape, backend, device, dtype, args.repeat, predicted)
        rows.append(row)
        ratio = row["measured_over_predicted"]
        print(f"  {backend:<10} fwd+bwd {row['fwd_bwd_ms']:9.1f} ms  peak "
              f"{row['peak_fwd_bwd_gib']:7.2f} GiB (planner {row['predicted_fwd_bwd_gib']:.2f}, "
              f"ratio {'n/a' if ratio is None else f'{ratio:.2f}'})  sampler step "
              f"{row['sampler_step_ms']:9.1f} ms ({row['sampler_members']} members, peak "
              f"{row['peak_sampler_gib']:.2f} GiB)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "config": args.config, "shards": P, "dry_run": args.dry_run,
            "dtype": str(dtype), "parameters": plan.n_params,
            "shape": dataclasses.asdict(shape), "planner_terms_gib": {
                k: round(v / GIB, 3) for k, v in plan.terms.items()},
            "machine": machine_info(), "rows": rows}, indent=2) + "\n")
    return 0 if all(math.isfinite(r["fwd_bwd_ms"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
