"""`hpcds data ...`: build the benchmark or the forcings, check a pair of stores, compute
statistics."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hpcds.cli.common import add_config_args, config_from_args, progress
from hpcds.config.load import save_resolved, to_yaml
from hpcds.data.alignment import alignment_scores, check_dates, require_aligned
from hpcds.data.benchmark import generate_benchmark
from hpcds.data.dates import iso
from hpcds.data.forcings import build_forcings_store
from hpcds.data.paired import PairedDataset
from hpcds.errors import DataCheckError


def register(commands) -> None:
    data = commands.add_parser("data", help="datasets: benchmark, forcings, checks, statistics",
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

    forcings = sub.add_parser(
        "forcings", help="write the static HR fields (orography, land-sea mask) from ETOPO5",
        description="Write the forcings store for grid.hr to data.forcings_store: orography "
                    "(m, the ocean at 0 m) and land fraction in [0, 1] from ETOPO5 terrain "
                    "(benchmark.terrain_file; scripts/setup.sh installs it), interpolated from "
                    "the level of its pyramid that matches the grid spacing, for any grid.hr. "
                    "For users who have LR and HR weather datasets but no static fields. The "
                    "variables are named and scaled as data.static reads them "
                    "(data.static.orography, data.static.land_sea_mask; the orography as a "
                    "geopotential, m² s⁻², if data.static.orography_quantity=geopotential). "
                    "Written atomically; an existing store is kept unless --overwrite.")
    add_config_args(forcings)
    forcings.add_argument("--overwrite", action="store_true",
                          help="replace an existing store (only once the new one is complete)")
    forcings.set_defaults(func=run_forcings)

    check = sub.add_parser(
        "check", help="check that LR, HR and forcings stores fit together",
        description="Check the stores named in the config: variables, grids (coordinates vs "
                    "grid.lr / grid.hr, in any cell order), the static fields (data.static: "
                    "present, constant, units, ranges), HR domain inside the LR domain, dates "
                    "(none missing), "
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


def run_forcings(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    started = time.perf_counter()
    path, static = build_forcings_store(cfg, overwrite=args.overwrite, config_yaml=to_yaml(cfg))
    orog, lsm = static["orog"], static["lsm"]
    print(f"forcings: {path} (grid.hr {cfg.grid.hr.name}, {orog.size} cells)")
    print(f"  orography {orog.min():.0f} … {orog.max():.0f} m, land fraction {lsm.mean():.3f} "
          f"on average")
    print(f"forcings written in {time.perf_counter() - started:.1f} s")
    return 0


def run_check(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    d = cfg.data
    ds = PairedDataset.from_config(cfg)
    print(f"stores     ok: LR {ds.lr.path} ({ds.lr_grid.name}, {ds.lr_grid.size} cells), "
          f"HR {ds.hr.path} ({ds.hr_grid.name}, {ds.hr_grid.size} cells)")
    print(f"variables  ok: {', '.join(ds.variables)}")
    st, orog = d.static, ds.static_fields["orog"]
    scaled = " / g" if st.orography_quantity.value == "geopotential" else ""
    print(f"static     ok: orography {st.orography}{scaled} ({orog.min():.0f} … "
          f"{orog.max():.0f} m), land fraction {st.land_sea_mask}, from {ds.static_store.path}")
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
