"""The longer quality benchmark: the `hpcds demo` pipeline with a larger model and a training
budget in minutes, reporting the demo's figures (CRPS / oracle CRPS, spectral ratio at high
wavenumbers, spread/skill, tail quantiles) per source.

    .venv/bin/python perf/quality.py --minutes 20                       # demo config, 20 min/model
    .venv/bin/python perf/quality.py --minutes 60 model.hidden_dim=128 sampling.members=16

The number of training steps is set from the budget: a 20-step calibration run measures the
seconds per optimizer step (the trainer's own clock: setup, validation and checkpoints
excluded), then each of the two models (diffusion, deterministic) trains for `--minutes`
worth of steps. Results go to
perf/results/quality-<date>.{json,md} with the machine, the config and the stage timings.
Extra `key=value` arguments are config overrides (as for `hpcds demo`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS, machine_info, write_record  # noqa: E402  (perf/machine.py)

from hpcds.config.load import load_config  # noqa: E402
from hpcds.data.benchmark import generate_benchmark  # noqa: E402
from hpcds.pipeline import run_pipeline  # noqa: E402
from hpcds.train import train  # noqa: E402

CALIBRATION_STEPS = 20


def seconds_per_step(cfg) -> float:
    """Seconds per optimizer step of the diffusion model, from a short run (the trainer's
    clock, which leaves out setup, validation and checkpoints)."""
    cal = copy.deepcopy(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        cal.run.out_dir = tmp
        cal.training.run_dir = str(Path(tmp) / "calibration")
        cal.training.steps = CALIBRATION_STEPS
        cal.training.val_every = cal.training.checkpoint_every = CALIBRATION_STEPS
        for key in ("lr_store", "hr_store", "forcings_store"):
            setattr(cal.data, key, str(Path(tmp) / f"{key}.zarr"))
        cal.training.log_every = CALIBRATION_STEPS
        generate_benchmark(cal, overwrite=True, progress=False)
        return float(train(cal, progress=False)["seconds_per_step"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config", default="demo", help="preset name or YAML (default demo)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="training budget per model in minutes (default 20)")
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="hpcds-quality-"))
    cfg = load_config(args.config, [*args.overrides, f"run.out_dir={out}"])
    per_step = seconds_per_step(cfg)
    steps = max(CALIBRATION_STEPS, int(args.minutes * 60 / per_step))
    cfg.training.steps = steps
    cfg.training.warmup_steps = min(cfg.training.warmup_steps, steps // 10)
    cfg.training.val_every = cfg.training.checkpoint_every = max(1, steps // 4)
    cfg.training.log_every = max(1, steps // 20)
    print(f"quality: {per_step:.3f} s/step → {steps} steps per model "
          f"({args.minutes:g} min budget)", file=sys.stderr)

    started = time.perf_counter()
    run = run_pipeline(cfg, out, progress=True)
    total = time.perf_counter() - started
    summary = run["result"]["summary"]
    print(f"report: {run['report']}")
    print("\n".join(summary))

    record = dict(config=args.config, overrides=args.overrides, minutes=args.minutes,
                  seconds_per_step=per_step, steps=steps, total_seconds=total,
                  times=run["times"], summary=summary, report=str(run["report"]))
    path = write_record("quality", [record], scores=run["result"].get("scores"))
    md = path.with_suffix(".md")
    md.write_text(
        f"# perf/quality.py, {time.strftime('%Y-%m-%d')}\n\n"
        f"Machine: {json.dumps(machine_info())}\n\n"
        f"Command: `{' '.join(sys.argv)}`; {steps} steps per model ({per_step:.3f} s/step), "
        f"total {total / 60:.1f} min (" + ", ".join(
            f"{k} {v:.0f} s" for k, v in run["times"].items()) + ").\n\n```\n"
        + "\n".join(summary) + "\n```\n")
    print(f"recorded {md.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
