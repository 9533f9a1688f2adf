"""Where the denoiser fails: the power spectrum of D(x; σ) − x₀ per noise level and per
wavenumber band, on held-out dates, per variable.

    .venv/bin/python perf/denoiser_error.py runs/demo          # a `hpcds demo --out` directory
    .venv/bin/python perf/denoiser_error.py runs/demo --sigmas 14 --draws 2 --record before

For each σ on a log grid from σ_min to σ_max, each held-out date and `--draws` noise draws:
x = x₀ + σ·n (x₀ the normalised residual target, n unit white noise, or coloured as the
model was trained: diffusion.noise), D = the trained
denoiser (EMA weights, as sampling uses), e = D − x₀. Its spectrum per variable (the
evaluation's own: 2-D DCT on limited-area grids) is divided by the target's spectrum x₀, then
averaged over three bands of wavenumber: `large` (below the LR grid's Nyquist wavenumber — the
scales the condition carries), `mid` (from there to half the HR range) and `high` (the upper
half of the HR range, where the demo's `spectral ratio at high wavenumbers` is measured).
A ratio < 1 beats predicting zero (D = 0 gives e = −x₀: ratio 1); the noise itself, σ²·white,
is printed alongside as `noise/target` (what D = x would leave). Also the λ(σ)-weighted MSE
(the training loss at that σ) and, per variable, `MSE/Wiener`: the denoiser's mean-square
error over the Wiener filter's, E_k[P_k σ² / (P_k + σ²)] with P_k the targets' per-mode power
(orthonormal 2-D DCT, averaged over the dates in radial bins) — the error of the best linear
denoiser of a stationary Gaussian field with the targets' spectrum. For msl, whose target is
exactly such a field up to its tails (the benchmark's law), it is the bound; for the others,
whose targets depend on terrain and the LR state, the true optimum is lower, so ≫ 1 still
means the network is far from it.

What to read: a white-noise floor in sampled members is left where, at the small σ of the last
sampler steps, the error at high wavenumbers is comparable to or above the target's own power
there (ratio ≳ 0.3): the error never gets removed after that step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import write_record  # noqa: E402

from hpcds.config.load import load_config  # noqa: E402
from hpcds.data.paired import PairedDataset  # noqa: E402
from hpcds.ensemble.model import load_sampling_model  # noqa: E402
from hpcds.evaluate.spectra import grid_spacing_km, lr_nyquist_k, spectrum_for_grid  # noqa: E402
from hpcds.grids import make_grid  # noqa: E402
from hpcds.train.data import TrainSamples, prepare_normalisation, split_dates  # noqa: E402

BANDS = ("large", "mid", "high")


def band_masks(k: np.ndarray, k_lr: float) -> dict[str, np.ndarray]:
    """large: k ≤ k_lr (the LR grid's Nyquist); mid: k_lr < k ≤ k_max/2; high: k > k_max/2."""
    half = k.max() / 2
    return {"large": (k > 0) & (k <= k_lr), "mid": (k > k_lr) & (k <= half), "high": k > half}


def lr_nyquist(cfg) -> float:
    """π / Δx of the LR grid in rad/km (the DCT's wavenumber units)."""
    return lr_nyquist_k(make_grid(cfg.grid.lr))


def run_config(run: Path):
    """The config a `hpcds demo --out` / `perf/skill_run.py --out` directory was run with."""
    return load_config(str(run / "demo.config.yaml"))


def load_held_out(cfg, run: Path):
    """(HR grid, the run's sampling model (EMA weights), its held-out samples normalised as
    in training) for a `hpcds demo --out` / `perf/skill_run.py --out` directory."""
    hr = make_grid(cfg.grid.hr)
    model = load_sampling_model(cfg, hr, run / "train_diffusion" / "latest.pt", device="cpu")
    ds = PairedDataset.from_config(cfg)
    split = split_dates(ds, cfg.training.val_dates)
    prepare_normalisation(cfg, split, run / "train_diffusion", write=False)
    return hr, model, TrainSamples(split.val)


@torch.no_grad()
def measure(cfg, run: Path, n_sigmas: int, draws: int, seed: int) -> dict:
    hr, model, samples = load_held_out(cfg, run)
    variables = list(cfg.data.variables)
    sigmas = np.exp(np.linspace(math.log(cfg.diffusion.sigma_min),
                                math.log(cfg.diffusion.sigma_max), n_sigmas))
    gen = torch.Generator().manual_seed(seed)
    sd = float(model.precond.sigma_data)
    target_power, err_power, loss = None, None, np.zeros(n_sigmas)
    mse = np.zeros((n_sigmas, len(variables)))
    targets = [samples[i]["target"].double().T.numpy() for i in range(len(samples))]
    wiener = wiener_mse(np.stack(targets), hr, sigmas)  # (n_sigmas, V) or None
    for i in range(len(samples)):
        s = samples[i]
        y, cond, forcings = (s[key][None].double() for key in ("target", "cond", "forcings"))
        k, py, _ = spectrum_for_grid(y[0].T.numpy(), hr)  # (V, nk)
        target_power = py if target_power is None else target_power + py
        for j, sigma in enumerate(sigmas):
            for _ in range(draws):
                n = torch.randn(y.shape, generator=gen, dtype=torch.float64)
                if model.noise_shape is not None:  # the coloured noise it was trained with
                    n = torch.from_numpy(model.noise_shape.apply(n.numpy()))
                d = model.precond(y + sigma * n, torch.tensor(sigma, dtype=torch.float64),
                                  cond.float(), forcings.float()).double()
                e = (d - y)[0].T.numpy()  # (V, N)
                _, pe, _ = spectrum_for_grid(e, hr)
                if err_power is None:
                    err_power = np.zeros((n_sigmas,) + pe.shape)
                err_power[j] += pe
                lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
                loss[j] += lam * float(((d - y) ** 2).mean())
                mse[j] += ((d - y) ** 2).mean(dim=(0, 1)).numpy()
    n_dates = len(samples)
    target_power /= n_dates
    err_power /= n_dates * draws
    loss /= n_dates * draws
    mse /= n_dates * draws
    masks = band_masks(k, lr_nyquist(cfg))
    noise = noise_power(hr, len(variables), model.noise_shape)  # (V, nk)
    rows = []
    for j, sigma in enumerate(sigmas):
        for v, name in enumerate(variables):
            row = {"sigma": float(sigma), "variable": name, "loss": float(loss[j]),
                   "mse": float(mse[j, v]),
                   "mse/wiener": None if wiener is None else float(mse[j, v] / wiener[j, v])}
            for b in BANDS:
                m = masks[b]
                t = target_power[v, m].mean()
                row[f"err/target {b}"] = float(err_power[j, v, m].mean() / t)
                # the unit noise's band power (white: even over the DCT's modes; coloured:
                # the model's shape), times σ², against the target's (as `err`)
                row[f"noise/target {b}"] = float(sigma**2 * noise[v, m].mean() / t)
            rows.append(row)
    return {"k": k.tolist(), "bands": {b: [float(k[m].min()), float(k[m].max())]
                                       for b, m in masks.items()},
            "target_power": target_power.tolist(), "error_power": err_power.tolist(),
            "sigmas": sigmas.tolist(), "variables": variables, "rows": rows,
            "n_dates": n_dates, "draws": draws}


def wiener_mse(targets: np.ndarray, grid, sigmas: np.ndarray, n_bins: int = 48
               ) -> np.ndarray | None:
    """targets (n_dates, V, N) in SFC order → (n_sigmas, V): E_k[P_k σ²/(P_k + σ²)], the
    per-node MSE of the Wiener filter for a stationary Gaussian field whose per-mode power
    P_k is the targets' (orthonormal 2-D DCT on the raster, averaged over dates and over
    modes in `n_bins` radial bins of |k|). None on grids that are not rasters."""
    from scipy.fft import dctn

    shape = tuple(grid.field_shape)
    if grid.is_global or len(shape) != 2:
        return None
    native = grid.to_native(targets, axis=-1).reshape(targets.shape[:-1] + shape)
    power = (dctn(native, axes=(-2, -1), norm="ortho") ** 2).mean(axis=0)  # (V, ny, nx)
    dx, dy = grid_spacing_km(grid)
    ky = np.arange(shape[0]) / (shape[0] * dy)
    kx = np.arange(shape[1]) / (shape[1] * dx)
    kk = np.hypot(ky[:, None], kx[None, :])
    bins = np.minimum((kk / kk.max() * n_bins).astype(int), n_bins - 1).ravel()
    counts = np.bincount(bins, minlength=n_bins)
    out = np.zeros((len(sigmas), power.shape[0]))
    for v, p in enumerate(power.reshape(power.shape[0], -1)):
        p_bin = np.bincount(bins, weights=p, minlength=n_bins) / np.maximum(counts, 1)
        pk = p_bin[bins]  # (modes,)
        for j, s in enumerate(sigmas):
            out[j, v] = np.mean(pk * s**2 / (pk + s**2))
    return out


def noise_power(grid, n_vars: int, shape=None) -> np.ndarray:
    """(V, nk) the spectrum of the unit noise on `grid`, per variable: white (shape None) or
    coloured by the model's `NoiseShape`; the mean of 16 fixed draws' spectra (every draw has
    the same expectation; 16 are enough for the band means here)."""
    z = np.random.default_rng(0).standard_normal((16, grid.size, n_vars))
    if shape is not None:
        z = shape.apply(z)
    _, p, _ = spectrum_for_grid(np.moveaxis(z, -1, 0), grid)  # (V, 16, nk)
    return p.mean(axis=1)


def format_table(result: dict) -> str:
    lines = ["| σ | variable | loss λ·MSE | MSE/Wiener | err/target large | mid | high | "
             "noise/target high |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        w = "n/a" if r["mse/wiener"] is None else f"{r['mse/wiener']:.2f}"
        lines.append(f"| {r['sigma']:.3g} | {r['variable']} | {r['loss']:.3f} | {w} | "
                     f"{r['err/target large']:.3g} | {r['err/target mid']:.3g} | "
                     f"{r['err/target high']:.3g} | {r['noise/target high']:.3g} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a `hpcds demo --out` directory")
    ap.add_argument("--sigmas", type=int, default=12, help="σ values, log-spaced")
    ap.add_argument("--draws", type=int, default=1, help="noise draws per date and σ")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", default=None, metavar="TAG",
                    help="write perf/results/denoiser-error-<date>-TAG.json")
    args = ap.parse_args(argv)
    cfg = run_config(args.run)
    result = measure(cfg, args.run, args.sigmas, args.draws, args.seed)
    print(f"bands (rad/km): {json.dumps(result['bands'])}; {result['n_dates']} dates x "
          f"{result['draws']} draws")
    print(format_table(result))
    if args.record:
        write_record("denoiser-error", result.pop("rows"), tag=f"-{args.record}",
                     run=str(args.run), **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
