"""The members' variance against the benchmark law's own, per variable, on the held-out dates.

    .venv/bin/python perf/law_variance.py RUN     # a `hpcds demo --out` / skill_run directory

RUN holds `ensemble.zarr` and the run's config (`demo.config.yaml`). Draws
`--law-members` exact members per held-out date from the law (the oracle's stream with its own
seed) and prints, per variable, the mean over cells and dates of the members' unbiased variance
over the law's: 1 = the spread is the law's, > 1 over-dispersed. Also split by the law-mean wind
speed (the winds' stochastic amplitude grows with it) and, for variables in
data.log_transform, by the law's mean amount in the transformed space (log1p(x/ε)) too.
The ratio is noisy where the law's variance is tiny (dry cells); a spread/skill near 1 does
not show it, because the ensemble mean's error includes the law's own variance.
Last, per wavenumber band (limited-area grids): the members' spread power over the law's, and
the ensemble mean's systematic error against the law's mean, over the law's spread power —
over-dispersion with a right mean (spread > 1, error ≈ 0) is the denoiser's noise, not its
uncertainty about the mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import zarr

from hpcds.data.paired import PairedDataset
from hpcds.evaluate.baselines import make_oracle
from hpcds.evaluate.spectra import spectrum_for_grid
from hpcds.pipeline import held_out_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoiser_error import lr_nyquist, run_config  # noqa: E402

AMOUNT_BINS = [1e-6, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, np.inf]  # law-mean amount, store units


def variance_ratio(members: np.ndarray, law: np.ndarray, mask=None) -> float:
    """members (M, D, N), law (L, D, N) → mean member variance / mean law variance."""
    vm, vl = members.var(axis=0, ddof=1), law.var(axis=0, ddof=1)
    if mask is not None:
        vm, vl = vm[mask], vl[mask]
    return float(vm.mean() / vl.mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--law-members", type=int, default=16)
    args = ap.parse_args(argv)
    cfg = run_config(args.run)
    ds = PairedDataset.from_config(held_out_config(cfg), require_complete=False)
    oracle = make_oracle(cfg, ds, args.law_members, seed=987654321)
    if oracle is None:
        raise SystemExit("law_variance: this config has no benchmark law to draw from")
    law = np.stack([oracle(i) for i in range(len(ds))], axis=1)  # (L, D, V, N)
    ens = zarr.open(str(args.run / "ensemble.zarr"), mode="r")["data"][:]  # (D, V, M, N)
    ens = np.moveaxis(ens, 2, 0).astype(np.float64)  # (M, D, V, N)
    variables = list(cfg.data.variables)
    print(f"{args.run}: {ens.shape[0]} members, {args.law_members} law draws, "
          f"{ens.shape[1]} dates")
    print("variance over the law's: " + "  ".join(
        f"{v} {variance_ratio(ens[:, :, j], law[:, :, j]):.3f}" for j, v in enumerate(variables)))
    if "10u" in variables and "10v" in variables:
        iu, iv = variables.index("10u"), variables.index("10v")
        speed = np.hypot(law[:, :, iu].mean(0), law[:, :, iv].mean(0))  # (D, N)
        edges = np.quantile(speed, np.linspace(0, 1, 6))
        masks = [(speed >= a) & (speed <= b) for a, b in zip(edges[:-1], edges[1:])]
        print("by the law-mean wind speed (quintiles, m/s): " + " / ".join(
            f"{speed[m].mean():.1f}" for m in masks))
        for j, v in enumerate(variables):
            print(f"  {v:4s} " + " / ".join(
                f"{variance_ratio(ens[:, :, j], law[:, :, j], m):.2f}" for m in masks))
    for v, eps in (cfg.data.log_transform or {}).items():
        if v not in variables or not eps > 0:
            continue
        j = variables.index(v)
        amount = law[:, :, j].mean(0)
        log_e, log_l = (np.log1p(np.maximum(x[:, :, j], 0) / eps) for x in (ens, law))
        print(f"{v} by the law-mean amount: variance over the law's, in store units / "
              f"in log1p(x/{eps:g})")
        for a, b in zip(AMOUNT_BINS[:-1], AMOUNT_BINS[1:]):
            m = (amount >= a) & (amount < b)
            if m.sum() < 50:
                continue
            print(f"  [{a:g}, {b:g}): {m.sum():6d} cells  "
                  f"{variance_ratio(ens[:, :, j], law[:, :, j], m):.3f} / "
                  f"{variance_ratio(log_e, log_l, m):.3f}")
    k_lr = lr_nyquist(cfg)
    if k_lr is not None:
        edges = [0.0, k_lr, 2 * k_lr, 4 * k_lr, np.inf]
        print("by wavenumber band (rad/km; the LR Nyquist is the first edge): the members' spread "
              "power over the law's / the ensemble mean's systematic error power over the law's")
        print("      " + "  ".join(f"[{a:.3f}, {b:.3f})" for a, b in zip(edges[:-1], edges[1:])))
        spread, error = band_power(ens, law, ds.hr_grid, edges)
        for j, v in enumerate(variables):
            print(f"  {v:4s}" + "  ".join(f"{a:6.2f} / {b:6.3f}" for a, b in zip(spread[j],
                                                                                 error[j])))
    return 0


def band_power(ens: np.ndarray, law: np.ndarray, grid, edges) -> tuple[np.ndarray, np.ndarray]:
    """ens (M, D, V, N), law (L, D, V, N) → per variable and band (V, bands): the members'
    spread power over the law's, and the ensemble mean's systematic error over the law's
    spread power. The error is |mean_ens − mean_law|² less its sampling noise (the spreads
    over M and L): ≈ 0 when the members are centred on the law's conditional mean."""
    M, L = len(ens), len(law)

    def spread_and_mean(x):  # x (K, D, V, N) → spread power (V, nk), mean (D, V, N)
        mean = x.mean(0)
        k, p, _ = spectrum_for_grid(x - mean, grid)  # (K, D, V, nk)
        return k, p.sum(0).sum(0) / (len(x) - 1), mean

    k, s_ens, m_ens = spread_and_mean(ens)
    _, s_law, m_law = spread_and_mean(law)
    _, e, _ = spectrum_for_grid(m_ens - m_law, grid)  # (D, V, nk)
    e = e.sum(0) - s_ens / M - s_law / L
    bands = [(k >= a) & (k < b) for a, b in zip(edges[:-1], edges[1:])]
    total = np.stack([[x[:, m].sum(-1) for m in bands] for x in (s_ens, e, s_law)])
    return (total[0] / total[2]).T, (total[1] / total[2]).T


if __name__ == "__main__":
    sys.exit(main())
