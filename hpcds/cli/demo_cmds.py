"""`hpcds demo`: benchmark → train (diffusion + deterministic) → sample → evaluate → report."""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from hpcds.cli.common import add_config_args, config_from_args

QUICK = ["benchmark.n_dates=12", "training.steps=30", "training.val_dates=2",
         "training.val_every=30", "training.checkpoint_every=30", "sampling.members=4",
         "sampling.members_per_batch=4", "sampling.steps=8", "evaluation.bootstrap=20"]


def register(commands) -> None:
    parser = commands.add_parser(
        "demo", help="the whole pipeline on the Alps benchmark, in one command",
        description="Build the benchmark (data.*_store), train the EDM diffusion downscaler "
                    "and the deterministic conditional-mean model (run dirs train_diffusion/ and "
                    "train_deterministic/ under --out), sample an ensemble, evaluate it against "
                    "the truth, the interpolated LR input, the deterministic model and the "
                    "oracle (exact p(HR|LR)), and write the report. Settings: configs/demo.yaml "
                    "plus key=value overrides; --quick is the small CI size.",
        epilog="Example: hpcds demo --quick --out /tmp/demo")
    add_config_args(parser)
    parser.set_defaults(config="demo")
    parser.add_argument("--out", metavar="DIR", help="output directory (sets run.out_dir)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for CI: " + " ".join(QUICK))
    parser.set_defaults(func=run_demo)


def _step(name: str) -> float:
    print(f"== {name}", file=sys.stderr, flush=True)
    return time.perf_counter()


def run_demo(args: argparse.Namespace) -> int:
    from hpcds.config.load import save_resolved
    from hpcds.data.benchmark import generate_benchmark
    from hpcds.ensemble.generate import generate
    from hpcds.evaluate.report import write_report
    from hpcds.evaluate.run import evaluate
    from hpcds.grids import make_grid
    from hpcds.train import train

    overrides = list(args.overrides)
    if "=" in args.config:
        args.config, overrides = "demo", [args.config, *overrides]
    args.overrides = (QUICK if args.quick else []) + overrides
    if args.out:
        args.overrides.append(f"run.out_dir={args.out}")
    started = time.perf_counter()
    cfg = config_from_args(args)
    out = Path(cfg.run.out_dir)
    save_resolved(cfg, out, name="demo.config.yaml")
    times = {}

    t = _step("benchmark: LR, HR truth and forcings stores")
    generate_benchmark(cfg, overwrite=True, progress=True)
    times["benchmark"] = time.perf_counter() - t

    diff = copy.deepcopy(cfg)
    diff.diffusion.deterministic = False
    diff.training.run_dir = str(out / "train_diffusion")
    det = copy.deepcopy(cfg)
    det.diffusion.deterministic = True
    det.training.run_dir = str(out / "train_deterministic")
    t = _step(f"train the diffusion model ({cfg.training.steps} steps)")
    s_diff = train(diff, progress=True)
    t2 = _step(f"train the deterministic model ({cfg.training.steps} steps)")
    s_det = train(det, progress=True)
    times["train"] = time.perf_counter() - t

    t = _step(f"sample {cfg.sampling.members} members per date")
    diff.sampling.output = str(out / "ensemble.zarr")
    generate(diff, checkpoint=s_diff["checkpoint"], overwrite=True, progress=True)
    times["sample"] = time.perf_counter() - t

    t = _step("evaluate against truth, interpolation, deterministic and oracle")
    result = evaluate(cfg, diff.sampling.output, out_dir=out / "eval",
                      deterministic_checkpoint=s_det["checkpoint"], progress=True)
    index = write_report(result, out / "eval", make_grid(cfg.grid.hr))
    times["evaluate"] = time.perf_counter() - t
    del t2
    total = time.perf_counter() - started
    print(f"report: {index}")
    print("\n".join(result["summary"]))
    print(f"demo took {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + ")", file=sys.stderr)
    return 0
