"""`hpcds evaluate`: score an HR ensemble store against the truth and the baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcds.cli.common import add_config_args, config_from_args


def register(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="score an HR ensemble against the truth, baselines and the oracle",
        description="Stream over the dates of the ensemble store --forecast and score it "
                    "against the truth (--truth, default data.hr_store): fair / almost-fair "
                    "CRPS, RMSE, spread/skill and rank histograms per variable and region, "
                    "power spectra and tail quantiles; the same for the interpolated LR input, "
                    "the deterministic model (--deterministic CKPT) and, on the benchmark, the "
                    "oracle (exact draws of p(HR|LR)). Writes scores.json, PNG figures and "
                    "index.html to --out (default run.out_dir/eval).")
    add_config_args(parser)
    parser.add_argument("--forecast", required=True, metavar="STORE",
                        help="the ensemble store (`hpcds sample` output)")
    parser.add_argument("--truth", metavar="STORE", help="HR truth store (default data.hr_store)")
    parser.add_argument("--out", metavar="DIR", help="report directory (default run.out_dir/eval)")
    parser.add_argument("--deterministic", metavar="CKPT",
                        help="a deterministic (regression) checkpoint to score as a baseline")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from hpcds.evaluate.report import write_report
    from hpcds.evaluate.run import evaluate
    from hpcds.grids import make_grid

    cfg = config_from_args(args)
    out = Path(args.out or Path(cfg.run.out_dir) / "eval")
    result = evaluate(cfg, args.forecast, truth_path=args.truth, out_dir=out,
                      deterministic_checkpoint=args.deterministic, progress=True)
    index = write_report(result, out, make_grid(cfg.grid.hr))
    print(f"report: {index}")
    print("\n".join(result["summary"]))
    return 0
