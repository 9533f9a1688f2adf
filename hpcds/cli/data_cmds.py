"""`hpcds data ...`: build the benchmark, check a pair of stores, compute statistics."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hpcds.cli.common import add_config_args, config_from_args, progress
from hpcds.config.load import save_resolved, to_yaml
from hpcds.data.alignment import alignment_scores, check_dates, require_aligned
from hpcds.data.benchmark import generate_benchmark
from hpcds.data.dates import iso
from hpcds.data.paired import PairedDataset
from hpcds.errors import DataCheckError


def register(commands) -> None:
    data = commands.add_parser("data", help="datasets: benchmark, checks, statistics",
                               description="Build, check and describe paired LR/HR datasets.")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    bench = sub.add_parser(
        "benchmark", help="write the synthetic LR/HR pair with a known p(HR|LR)",
        description="Write the benchmark: LR and HR anemoi-layout zarr stores plus HR forcings, "
                    "on real ETOPO5 terrain, with an exactly known conditional distribution "
                    "(see hpcds/data/benchmark.py). Outputs go to data.lr_store, data.hr_store "
                    "and data.forcings_store; the resolved config is saved beside them.")
    add_config_args(bench)
    bench.add_argument("--overwrite", action="store_true",
                       help="replace existing stores (only once the new ones are complete)")
    bench.set_defaults(func=run_benchmark)

    check = sub.add_parser(
        "check", help="check that LR, HR and forcings stores fit together",
        description="Check the stores named in the config: variables, grids (coordinates vs "
                    "grid.lr / grid.hr), HR domain inside the LR domain, dates (none missing), "
                    "NaNs (data.nan_policy) and alignment (coarse-grained HR vs LR per variable: "
                    "anomaly correlation ≥ data.min_correlation, bias ≤ data.max_bias). "
                    "Exit status 2 on the first failed check, with what to fix.")
    add_config_args(check)
    check.set_defaults(func=run_check)

    stats = sub.add_parser(
        "stats", help="compute normalisation statistics (inputs and residual targets)",
        description="Stream over the dates in float64 and write the per-variable statistics "
                    "used for normalisation to data.stats_file: LR input mean/std (from the LR "
                    "store) and residual x_HR − interp(x_LR) mean/std.")
    add_config_args(stats)
    stats.set_defaults(func=run_stats)


def run_benchmark(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    started = time.perf_counter()
    paths = generate_benchmark(cfg, overwrite=args.overwrite, progress=True,
                               config_yaml=to_yaml(cfg))
    saved = save_resolved(cfg, Path(cfg.data.hr_store).parent)
    for role, path in paths.items():
        print(f"{role:>9}: {path}")
    print(f"   config: {saved}")
    print(f"benchmark written in {time.perf_counter() - started:.1f} s")
    return 0


def run_check(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    d = cfg.data
    ds = PairedDataset.from_config(cfg)
    print(f"stores     ok: LR {ds.lr.path} ({ds.lr_grid.name}, {ds.lr_grid.size} cells), "
          f"HR {ds.hr.path} ({ds.hr_grid.name}, {ds.hr_grid.size} cells)")
    print(f"variables  ok: {', '.join(ds.variables)}")
    print("domain     ok: HR grid inside the LR domain")
    print(f"dates      ok: {len(ds)} dates {iso(ds.dates[0])} … {iso(ds.dates[-1])}, none missing")
    nans = ds.nan_dates(progress=progress("NaN scan"))
    if nans:  # only reachable with nan_policy=error: skip_date already dropped them
        role, i = nans[0]
        raise DataCheckError(f"NaNs on {len(nans)} store dates (first: {role} store, "
                             f"{iso(ds.dates[i])}): fix the stores or set "
                             "data.nan_policy=skip_date")
    skipped = len(ds.skipped_dates)
    print(f"NaNs       ok: {f'{skipped} dates with NaNs skipped' if skipped else 'none'}")
    picked = check_dates(len(ds), d.check_dates)
    scores = alignment_scores(ds, picked, d.min_correlation, d.max_bias,
                              progress=progress("alignment"))
    print(f"alignment    : coarse-grained HR vs LR on {len(picked)} dates")
    print(f"  {'variable':<9}{'correlation':>12}{'bias/σ':>9}")
    for s in scores:
        print(f"  {s.variable:<9}{s.correlation:>12.3f}{s.bias:>9.3f}  {'ok' if s.ok else 'FAIL'}")
    require_aligned(scores, ds, len(picked), d.min_correlation, d.max_bias)
    print("data check passed")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    ds = PairedDataset.from_config(cfg)
    norm = ds.set_normalisation(ds.residual_statistics(progress=progress("residual stats")))
    path = ds.save_statistics(cfg.data.stats_file)
    save_resolved(cfg, Path(path).parent, name="stats_config.yaml")
    print(f"{'variable':<9}{'input mean':>14}{'input std':>12}{'resid mean':>13}{'resid std':>12}")
    for v, name in enumerate(norm.variables):
        print(f"{name:<9}{norm.input_mean[v]:>14.5g}{norm.input_std[v]:>12.5g}"
              f"{norm.residual_mean[v]:>13.5g}{norm.residual_std[v]:>12.5g}")
    print(f"statistics over {len(ds)} dates written to {path}")
    return 0
