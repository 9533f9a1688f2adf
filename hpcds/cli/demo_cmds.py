"""`hpcds demo`: benchmark → train (diffusion + deterministic) → sample → evaluate → report."""

from __future__ import annotations

import argparse
import sys
import time

from hpcds.cli.common import add_config_args, config_from_args

QUICK = ["benchmark.n_dates=12", "training.steps=30", "training.val_dates=2",
         "training.val_every=30", "training.checkpoint_every=30", "sampling.members=4",
         "sampling.members_per_batch=4", "sampling.steps=8", "evaluation.bootstrap=20"]


def register(commands) -> None:
    parser = commands.add_parser(
        "demo", help="the whole pipeline on the Alps benchmark, in one command",
        description="Build the benchmark (data.*_store), train the EDM diffusion downscaler "
                    "and the deterministic conditional-mean model (run dirs train_diffusion/ and "
                    "train_deterministic/ under --out), sample an ensemble for the held-out dates "
                    "(the last training.val_dates, never trained on), evaluate it against "
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


def run_demo(args: argparse.Namespace) -> int:
    from hpcds.pipeline import run_pipeline

    overrides = list(args.overrides)
    if "=" in args.config:
        args.config, overrides = "demo", [args.config, *overrides]
    args.overrides = (QUICK if args.quick else []) + overrides
    if args.out:
        args.overrides.append(f"run.out_dir={args.out}")
    started = time.perf_counter()
    cfg = config_from_args(args)
    run = run_pipeline(cfg, cfg.run.out_dir, progress=True)
    total = time.perf_counter() - started
    print(f"report: {run['report']}")
    print("\n".join(run["result"]["summary"]))
    print(f"demo took {total:.0f} s (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in run["times"].items()) + ")", file=sys.stderr)
    return 0
