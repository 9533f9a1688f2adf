"""`hpcds evaluate`: score HR ensemble stores against the truth and the baselines."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from hpcds.cli.common import add_config_args, config_from_args


def register(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="score HR ensembles against the truth, baselines and the oracle",
        # raw: the example's store paths must not be broken at their hyphens
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Stream over the dates of the ensemble store(s) --forecast and score each "
            "against the truth (--truth, default data.hr_store): fair / almost-fair "
            "CRPS, RMSE, spread/skill and rank histograms per variable and region, "
            "power spectra and tail quantiles; the same for the interpolated LR input, "
            "the deterministic model (--deterministic CKPT) and, on the benchmark, the "
            "oracle (exact draws of p(HR|LR)). Repeat --forecast LABEL=STORE to compare "
            "several ensembles (same dates, variables, grid and member count) on the "
            "same figures. Writes scores.json (keyed by label), PNG figures and "
            "index.html to --out (default run.out_dir/eval), and prints a 5-line "
            "summary; on the benchmark a sixth line scores the forecasts against the "
            "law itself (its oracle draws) instead of its one-draw truth: the high-"
            "wavenumber ratio per variable, the worst wavenumber bin above the LR "
            "Nyquist and the last variable's top two quantiles, each over the "
            "oracle's. On 8 dates the oracle itself meets the goals against the truth "
            "in 4-8 % of blocks of dates (perf/truth_noise.py).", 79),
        epilog="Example, before and after high-noise fine-tuning:\n"
               "  hpcds evaluate demo --forecast before=runs/demo/ensemble.zarr \\\n"
               "      --forecast after=runs/demo-ft/ensemble.zarr")
    add_config_args(parser)
    parser.add_argument("--forecast", required=True, action="append", metavar="[LABEL=]STORE",
                        help="an ensemble store (`hpcds sample` output), optionally labelled; "
                             "repeat for several (unique labels, none of oracle, "
                             "deterministic, interpolation, truth); a bare STORE is labelled "
                             "'forecast'")
    parser.add_argument("--truth", metavar="STORE", help="HR truth store (default data.hr_store)")
    parser.add_argument("--out", metavar="DIR", help="report directory (default run.out_dir/eval)")
    parser.add_argument("--deterministic", metavar="CKPT",
                        help="a deterministic (regression) checkpoint to score as a baseline")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from hpcds.evaluate.report import write_report
    from hpcds.evaluate.run import evaluate
    from hpcds.evaluate.sources import parse_forecast_specs
    from hpcds.grids import make_grid

    forecasts = parse_forecast_specs(args.forecast)  # bad labels: before loading anything
    cfg = config_from_args(args)
    out = Path(args.out or Path(cfg.run.out_dir) / "eval")
    result = evaluate(cfg, forecasts, truth_path=args.truth, out_dir=out,
                      deterministic_checkpoint=args.deterministic, progress=True)
    index = write_report(result, out, make_grid(cfg.grid.hr))
    print(f"report: {index}")
    print("\n".join(result["summary"]))
    return 0
