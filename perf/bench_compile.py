"""`model.compile` against eager: one training step of the demo-size network, side by side.

    .venv/bin/python perf/bench_compile.py                     # configs/demo.yaml's model
    .venv/bin/python perf/bench_compile.py --steps 20 --threads 1 --record

Builds the network of `--config` (default demo: 0.125° Alps HR, 5,145 cells; hidden 64,
4 heads, 2 processor layers, 1 refiner) twice from the same seed, eager and with
model.compile=true (inductor, fullgraph), each with its own AdamW, on random inputs of the
run's shapes (B = training.batch_size, V variables, the forcings). A step = zero_grad, the
EDM loss (σ and noise from one fixed generator per model, so both see the same draws),
backward, AdamW. The first compiled step holds the compile (timed on its own: the inductor
cache lives in $TORCHINDUCTOR_CACHE_DIR, /tmp/torchinductor_$USER by default, so a second
run of this script compiles from cache); then `--warmup` untimed steps each; then `--steps`
rounds of one eager and one compiled step, alternating, so a load change on a shared
machine hits both alike. Reports the median seconds per step of each and their ratio, and
the losses of both (they must agree: the same network and draws). `--record` writes
perf/results/compile-<date>.json with the machine (perf/machine.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import write_record  # noqa: E402  (perf/machine.py)

from hpcds.config.load import load_config  # noqa: E402
from hpcds.data.forcings import FORCING_NAMES  # noqa: E402
from hpcds.grids import make_grid  # noqa: E402
from hpcds.train import rng  # noqa: E402
from hpcds.train.components import build_components  # noqa: E402
from hpcds.train.trainer import make_optimizer  # noqa: E402


def build(cfg, grid, compile_: bool, seed: int):
    cfg.model.compile = compile_
    rng.seed_all(seed)
    comps = build_components(cfg, grid, len(cfg.data.variables), len(FORCING_NAMES))
    return comps, make_optimizer(comps.net, cfg.training), torch.Generator().manual_seed(seed)


def step(comps, opt, gen, batch) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    out = comps.loss(comps.denoiser, *batch, generator=gen)
    out.loss.backward()
    opt.step()
    return out.loss.detach()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo")
    parser.add_argument("--steps", type=int, default=15, help="timed rounds (eager+compiled)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--record", action="store_true",
                        help="write perf/results/compile-<date>.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"grid.cache_dir={tmp}", *args.overrides])
        grid = make_grid(cfg.grid.hr)
        B, N, V = cfg.training.batch_size, grid.size, len(cfg.data.variables)
        gen = torch.Generator().manual_seed(1)
        batch = (torch.randn(B, N, V, generator=gen), torch.randn(B, N, V, generator=gen),
                 torch.randn(B, N, len(FORCING_NAMES), generator=gen))
        eager = build(cfg, grid, False, 0)
        compiled = build(cfg, grid, True, 0)
    params = sum(p.numel() for p in eager[0].net.parameters())
    print(f"{args.config}: {N} HR cells, hidden {cfg.model.hidden_dim}, "
          f"{cfg.model.processor_layers} processor layers, {params:,} parameters, "
          f"batch {B}, {torch.get_num_threads()} threads", flush=True)

    loss_e = step(*eager, batch)
    start = time.perf_counter()
    loss_c = step(*compiled, batch)
    compile_s = time.perf_counter() - start
    print(f"first compiled step (compile, forward + backward): {compile_s:.1f} s; "
          f"losses eager {loss_e.item():.6f} compiled {loss_c.item():.6f}", flush=True)
    for _ in range(args.warmup):
        step(*eager, batch)
        step(*compiled, batch)
    times = {"eager": [], "compiled": []}
    losses = {"eager": [], "compiled": []}
    for _ in range(args.steps):
        for name, model in (("eager", eager), ("compiled", compiled)):
            start = time.perf_counter()
            losses[name].append(step(*model, batch).item())
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    drift = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(*losses.values()))
    print(f"median s/step over {args.steps} alternating rounds: eager {med['eager']:.4f}, "
          f"compiled {med['compiled']:.4f}; speed-up ×{med['eager'] / med['compiled']:.2f}; "
          f"largest relative loss difference {drift:.1e} after "
          f"{1 + args.warmup + args.steps} AdamW steps", flush=True)
    if args.record:
        write_record("compile", [{
            "config": args.config, "hr_cells": N, "hidden_dim": cfg.model.hidden_dim,
            "processor_layers": cfg.model.processor_layers, "parameters": params,
            "batch_size": B, "threads": torch.get_num_threads(), "steps": args.steps,
            "first_compiled_step_s": round(compile_s, 2),
            "eager_s_per_step": round(med["eager"], 4),
            "compiled_s_per_step": round(med["compiled"], 4),
            "speedup": round(med["eager"] / med["compiled"], 3),
            "eager_s": [round(t, 4) for t in times["eager"]],
            "compiled_s": [round(t, 4) for t in times["compiled"]],
            "max_relative_loss_difference": drift}],
            tag=f"-threads{args.threads}" if args.threads else "", config=args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
