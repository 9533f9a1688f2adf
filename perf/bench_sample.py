"""Ensemble sampling throughput: HR fields (date × member) per second.

Builds the tiny benchmark (Alps, HR 0.125°, 5,145 cells) in a temporary directory, trains
the model for one step (a real checkpoint; throughput does not depend on the weights), then
times `hpcds.ensemble.generate` — the same code path as `hpcds sample` — writing a fresh
ensemble store.

    .venv/bin/python perf/bench_sample.py                       # tiny model, 8 Heun steps
    .venv/bin/python perf/bench_sample.py --steps 20 --members 8 --batch 4 --record

Prints the figures; `--record` also writes perf/results/sample-<date>.json with the machine
noted. samples/s counts written (date, member) fields over the sampling loop's wall time
(model loading and store creation excluded); network evaluations per sample are 2·steps − 1
for Heun and steps for DPM-Solver++(2M).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile

import torch

from hpcds.cli.main import main as hpcds_main
from hpcds.config.load import load_config
from hpcds.ensemble.generate import generate
from hpcds.ensemble.model import load_sampling_model
from machine import peak_rss_gib, write_record  # perf/machine.py
from hpcds.grids import make_grid


def run(args) -> list[dict]:
    model = [f"model.hidden_dim={args.hidden_dim}", f"model.num_heads={args.heads}",
             f"model.processor_layers={args.layers}",
             f"model.noise_embedding_dim={args.hidden_dim}", f"model.window={args.window}"]
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"run.out_dir={tmp}", f"benchmark.n_dates={max(2, args.dates)}", *model]
        assert hpcds_main(["data", "benchmark", args.config, *common, "--quiet"]) == 0
        assert hpcds_main(["train", args.config, *common, "training.steps=1",
                           "training.val_dates=1", "training.warmup_steps=1",
                           "training.val_every=100", "training.checkpoint_every=100",
                           "--quiet"]) == 0
        overrides = [*common, f"sampling.steps={args.steps}", f"sampling.solver={args.solver}",
                     f"sampling.members={args.members}",
                     f"sampling.members_per_batch={args.batch}",
                     f"sampling.S_churn={args.churn}"]
        cfg = load_config(args.config, overrides)
        hr_grid = make_grid(cfg.grid.hr)
        sampling_model = load_sampling_model(cfg, hr_grid)
        rows = []
        for threads in [int(t) for t in args.threads.split(",")]:
            if threads:
                torch.set_num_threads(threads)
            runs = []
            for r in range(args.repeat):
                cfg.sampling.output = f"{tmp}/ensemble-{threads}-{r}.zarr"
                result = generate(cfg, model=sampling_model, progress=False)
                runs.append(result)
                print(f"threads {torch.get_num_threads()}, run {r}: {result.written} fields in "
                      f"{result.seconds:.2f} s = {result.samples_per_s:.3f} samples/s",
                      flush=True)
            rows.append(summarise(args, cfg, hr_grid, sampling_model, runs))
    return rows


def summarise(args, cfg, hr_grid, sampling_model, runs) -> dict:
    n_params = sum(p.numel() for p in sampling_model.precond.parameters())
    evals = (2 * args.steps - 1) if args.solver == "heun" else args.steps
    best = max(runs, key=lambda r: r.samples_per_s)
    date_s = [s for r in runs for s in r.date_seconds.values()]
    row = {
        "config": args.config, "grid": hr_grid.name, "hr_cells": hr_grid.size,
        "variables": len(cfg.data.variables), "parameters": n_params,
        "hidden_dim": args.hidden_dim, "processor_layers": args.layers,
        "solver": args.solver, "steps": args.steps, "network_evals_per_sample": evals,
        "dates": args.dates, "members": args.members, "members_per_batch": args.batch,
        "samples_per_run": best.written,
        "samples_per_s": round(statistics.median(r.samples_per_s for r in runs), 4),
        "samples_per_s_best": round(best.samples_per_s, 4),
        "seconds_per_date_median": round(statistics.median(date_s), 4),
        "ms_per_network_eval_per_member": round(1e3 / (best.samples_per_s * evals), 3),
        "device": str(sampling_model.device), "torch_threads": torch.get_num_threads(),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    print(json.dumps(row, indent=2))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--solver", default="heun", choices=["heun", "dpmpp_2m"])
    parser.add_argument("--churn", type=float, default=0.0, help="sampling.S_churn")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="sampling.members_per_batch")
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--threads", default="0",
                        help="torch intra-op threads, a comma list to compare (0: default)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--record", action="store_true",
                        help="write perf/results/sample-<date>.json")
    args = parser.parse_args()
    rows = run(args)
    if args.record:
        write_record("sample", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
