"""How much of its input's noise the trained denoiser passes on, per variable and σ, against
the Wiener gain of the residual's stochastic part.

    .venv/bin/python perf/noise_gain.py RUN        # a `hpcds demo --out` / skill_run directory

For each σ, each held-out date and two noise draws n₁, n₂ (coloured as the model was trained):
    g(σ) = ⟨D(x₀ + σn₁) − D(x₀ + σn₂), σ(n₁ − n₂)⟩ / |σ(n₁ − n₂)|²     per variable,
the least-squares gain of D's response to its noise (x₀ the normalised residual target).
Beside it s²/(s² + σ²): with noise coloured like the residual's stochastic part of variance
s² (the detrended residual's, the mean power of the checkpoint's noise spectrum), the exact
denoiser of a Gaussian, homoscedastic stochastic part passes on exactly that share. A
heteroscedastic part (the benchmark's winds: σ_w grows with the wind speed) has a lower mean
gain (Jensen); a gain above the reference means D keeps noise the members then carry as
excess variance. Needs diffusion.noise=residual_spectrum.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoiser_error import load_held_out, run_config  # noqa: E402

SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)


@torch.no_grad()
def gains(cfg, run: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(g (len(SIGMAS), V), s² (V,))."""
    _, model, samples = load_held_out(cfg, run)
    shape = model.noise_shape
    if shape is None:
        raise SystemExit("noise_gain: the run trained on white noise (needs "
                         "diffusion.noise=residual_spectrum)")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for sigma in SIGMAS:
        num = den = 0.0
        for i in range(len(samples)):
            s = samples[i]
            y, cond, forcings = (s[k][None] for k in ("target", "cond", "forcings"))
            y = y.double()
            n1, n2 = (torch.from_numpy(shape.apply(
                torch.randn(y.shape, generator=gen, dtype=torch.float64).numpy())) for _ in "12")
            s_t = torch.tensor(sigma, dtype=torch.float64)
            d1, d2 = (model.precond(y + sigma * n, s_t, cond, forcings).double() for n in (n1, n2))
            dn = sigma * (n1 - n2)
            num = num + ((d1 - d2) * dn).sum(dim=(0, 1)).numpy()
            den = den + (dn * dn).sum(dim=(0, 1)).numpy()
        out.append(num / den)
    return np.array(out), shape.stochastic_variance()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    cfg = run_config(args.run)
    g, s2 = gains(cfg, args.run, args.seed)
    variables = list(cfg.data.variables)
    print("stochastic variance s² (of the normalised residual's 1): "
          + "  ".join(f"{v} {x:.3f}" for v, x in zip(variables, s2)))
    print("sigma  " + "  ".join(f"{v + ' net/Wiener':>17s}" for v in variables))
    for sigma, row in zip(SIGMAS, g):
        wiener = s2 / (s2 + sigma * sigma)
        print(f"{sigma:5.2f}  " + "  ".join(f"{a:8.3f}/{b:.3f}" for a, b in zip(row, wiener)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
