"""Where an ensemble's power comes from, per wavenumber band: the ensemble mean's, the spread's
and the ensemble mean's error, each over the truth's power.

    .venv/bin/python perf/mean_spread_spectra.py runs/demo            # a `hpcds demo` directory
    .venv/bin/python perf/mean_spread_spectra.py runs/x --truth runs/demo/data/hr.zarr \\
        --config demo benchmark.seed=7

A calibrated ensemble has mean + spread ≈ 1 in every band and spread ≈ error. Where the truth
is deterministic given the input (e.g. terrain-forced small scales) the spread should be ≈ 0:
spread there is noise the denoiser left. Spectra are the evaluation's (2-D DCT on
limited-area grids); the spread's power is the members' deviation from their mean, scaled by
M/(M − 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import zarr

from hpcds.config.load import load_config
from hpcds.data.store import open_store
from hpcds.evaluate.spectra import spectrum_for_grid
from hpcds.grids.grid_cache import cached_grid

BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.27), (0.27, np.inf))  # rad/km


def band_ratios(ens: np.ndarray, truth: np.ndarray, grid) -> dict:
    """ens (D, M, N), truth (D, N) → {band: (mean, spread, error) power over the truth's}."""
    M = ens.shape[1]
    mean = ens.mean(axis=1)
    k, pt, _ = spectrum_for_grid(truth, grid)
    parts = [spectrum_for_grid(mean, grid)[1],
             spectrum_for_grid((ens - mean[:, None]).reshape(-1, ens.shape[-1]), grid)[1]
             * M / (M - 1),
             spectrum_for_grid(mean - truth, grid)[1]]
    pt = pt.mean(axis=0)
    out = {}
    for lo, hi in BANDS:
        s = (k >= lo) & (k < hi)
        out[(lo, hi)] = tuple(float(p.mean(axis=0)[s].sum() / pt[s].sum()) for p in parts)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a demo directory (ensemble.zarr, data/hr.zarr)")
    ap.add_argument("--truth", type=Path, default=None, help="default RUN/data/hr.zarr")
    ap.add_argument("--config", default="demo")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    grid = cached_grid(cfg.grid.hr, cfg.grid.cache_dir)
    ens_store = zarr.open_group(str(args.run / "ensemble.zarr"), mode="r")
    data, dates = ens_store["data"][:], ens_store["dates"][:]  # (D, V, M, N)
    variables = [str(v) for v in ens_store["variable"][:]]
    hr = open_store(args.truth or args.run / "data" / "hr.zarr")
    index = {np.datetime64(d, "s"): i for i, d in enumerate(hr.dates)}
    truth = np.stack([np.asarray(hr.read(index[np.datetime64(d, "s")], variables)
                                 ).reshape(len(variables), -1) for d in dates])  # (D, V, N)
    print("band rad/km      " + "  ".join(f"{v:>22}" for v in variables))
    print("                 " + "  ".join(f"{'mean spread error':>22}" for _ in variables))
    rows = {v: band_ratios(data[:, i], truth[:, i], grid) for i, v in enumerate(variables)}
    for band in BANDS:
        cells = "  ".join("{:>6.2f} {:>6.2f} {:>6.2f}   ".format(*rows[v][band])
                          for v in variables)
        print(f"{band[0]:.2f}-{band[1]:<10.2f} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
