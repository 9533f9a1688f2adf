"""A model trained in CI must not put a noise floor into its members' small scales.

The tiny benchmark (40 dates, Alps 0.125°), the demo's model, 150 training steps (~25 s),
2 held-out dates × 4 members sampled with DPM-Solver++(2M) 40 steps (~17 s), scored by the
evaluation's own spectra. Measured (perf/results/skill-20261204-coloured-noise.md):
the members' power in the upper wavenumber half over the truth's, msl / 10v,

    white noise (diffusion.noise=white, the code before coloured noise)   6061 / 466
    coloured noise (diffusion.noise=residual_spectrum, detrended)          1.6 / 0.85

The bound, 5, sits 3× above the coloured run's worst and ~100× below the white run's best:
the test fails on a return of the noise floor, not on the model's other shortcomings at 150
steps (2t and 10u are too smooth there, 0.24 / 0.31; tp is not asserted: 431, its members
over-dispersed, see perf/results/demo-20261204.md).
"""

from hpcds.config.load import load_config
from hpcds.pipeline import run_pipeline

BOUND = 5.0


def test_trained_members_have_no_noise_floor(tmp_path):
    cfg = load_config("tiny", [
        f"run.out_dir={tmp_path}", "benchmark.n_dates=40", "training.steps=150",
        "training.val_dates=2", "training.val_every=0", "training.checkpoint_every=0",
        "sampling.members=4", "sampling.steps=40", "evaluation.bootstrap=10",
        "diffusion.noise=residual_spectrum"])
    run = run_pipeline(cfg, tmp_path, progress=False, benchmark=True, deterministic=False)
    high_k = run["result"]["spectra"]["high_k_ratio"]["forecast"]
    print({v: round(x, 2) for v, x in high_k.items()})
    assert high_k["msl"] < BOUND and high_k["10v"] < BOUND, high_k
