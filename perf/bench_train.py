"""Training throughput on the tiny benchmark: steps/s, samples/s and seconds per step.

    .venv/bin/python perf/bench_train.py                  # both models, 30 timed steps each
    .venv/bin/python perf/bench_train.py --steps 100 --model preset --record

Builds the tiny benchmark (10 dates) in a temporary directory, then for each model trains
`--warmup` untimed steps, stops, resumes and times `--steps` more (the trainer's own clock:
optimizer steps only, no validation or checkpoint time). Models: `preset` = the tiny preset's
network (configs/tiny.yaml: hidden 64, 4 heads, 2 processor layers), `test` = the tests'
network (hidden 16, 2 heads, 1 layer). `--record` writes perf/results/train-<date>.json with
the machine noted (and the 1-minute load average: on a shared 2-core machine other processes
skew the figures; `--threads 1` is the steadier measurement there). Extra `key=value`
arguments are config overrides for every run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import peak_rss_gib, write_record  # noqa: E402  (perf/machine.py)

from hpcds.checkpoint import LATEST, load_checkpoint  # noqa: E402
from hpcds.cli.main import main as hpcds_main  # noqa: E402
from hpcds.config.load import load_config  # noqa: E402
from hpcds.grids import grid_point_count  # noqa: E402
from hpcds.train import train  # noqa: E402

MODELS = {
    "preset": [],
    "test": ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1"],
}


def bench(name: str, out: str, args) -> dict:
    run_dir = Path(out) / f"run-{name}"
    overrides = [f"run.out_dir={out}", "benchmark.n_dates=10", "training.val_dates=2",
                 f"training.run_dir={run_dir}", f"training.batch_size={args.batch_size}",
                 f"training.steps={args.warmup + args.steps}", "training.val_every=0",
                 "training.checkpoint_every=0", f"training.log_every={args.steps}",
                 *MODELS[name], *args.overrides]
    cfg = load_config("tiny", overrides)
    train(cfg, progress=False, stop_at=args.warmup)  # compile caches, page in the data
    summary = train(cfg, progress=False)
    assert summary["steps_run"] == args.steps, summary
    params = sum(t.numel() for t in load_checkpoint(run_dir / LATEST)["model"].values())
    row = {"model": name, "hidden_dim": cfg.model.hidden_dim,
           "processor_layers": cfg.model.processor_layers, "parameters": params,
           "hr_cells": grid_point_count(cfg.grid.hr),
           "batch_size": args.batch_size, "steps": args.steps,
           "steps_per_s": round(summary["steps_per_s"], 3),
           "samples_per_s": round(summary["samples_per_s"], 3),
           "seconds_per_step": round(summary["seconds_per_step"], 4),
           "final_train_loss": round(summary["train_loss"], 5),
           "peak_rss_gib": round(peak_rss_gib(), 2)}
    print(f"{name:<8}{params:>10,} params  batch {args.batch_size}  "
          f"{row['steps_per_s']:>8.2f} steps/s  {row['samples_per_s']:>8.2f} samples/s  "
          f"{row['seconds_per_step']:>8.4f} s/step", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--record", action="store_true",
                        help="write perf/results/train-<date>.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(MODELS) if args.model == "all" else [args.model]
    with tempfile.TemporaryDirectory() as tmp:
        assert hpcds_main(["data", "benchmark", "tiny", f"run.out_dir={tmp}",
                           "benchmark.n_dates=10", "--quiet"]) == 0
        rows = [bench(name, tmp, args) for name in names]
    if args.record:
        write_record("train", rows, tag=f"-threads{args.threads}" if args.threads else "",
                     config="tiny")
    return 0


if __name__ == "__main__":
    sys.exit(main())
