"""`hpcds train`: train (or resume, or fine-tune) the diffusion downscaler."""

from __future__ import annotations

import argparse

from hpcds.cli.common import add_config_args, config_from_args, is_first_rank
from hpcds.train import train


def register(commands) -> None:
    parser = commands.add_parser(
        "train", help="train the diffusion downscaler on a paired LR/HR dataset",
        description="Train the EDM diffusion downscaler (or, with diffusion.deterministic=true, "
                    "the conditional-mean regression) on the stores named in the config; the "
                    "last training.val_dates dates are held out for validation. Writes to "
                    "training.run_dir: config.yaml (the resolved config), statistics.json "
                    "(normalisation from the training dates), metrics.jsonl (train lines every "
                    "training.log_every steps, validation lines every training.val_every), "
                    "step-XXXXXXX.pt checkpoints every training.checkpoint_every steps and at "
                    "the end, and latest.pt. A run_dir with a latest.pt is resumed exactly, under "
                    "the same config but for training.steps, the intervals and paths "
                    "(training.resume=false starts over); training.init_from=CKPT fine-tunes "
                    "from another run's weights with a fresh optimizer and schedule. "
                    "diffusion.noise=residual_spectrum (limited-area rasters; on in the demo) "
                    "trains on noise coloured like the training residuals' DCT spectrum, "
                    "measured at the start and saved in every checkpoint (`noise_spectrum`) "
                    "for sampling: on the demo's benchmark the members' excess power at high "
                    "wavenumbers fell 3.9 -> 2.2x the truth's (msl 36 -> 1.2x), 1.4x with "
                    "the demo's settings (perf/results/skill-20261204-coloured-noise.md). "
                    "data.log_transform={tp: 1.0e-3} (every preset) trains tp's residual in "
                    "log1p(tp/1 mm), where its multiplicative small-scale scatter is additive; "
                    "the offsets are saved with the normalisation and sampling inverts them: "
                    "tp's excess at high wavenumbers 3.7 -> 1.1x on the demo's benchmark, and "
                    "the demo's whole excess 1.10x at 4500 steps "
                    "(perf/results/skill-20261205-log-tp.md). A resume at or past "
                    "training.steps trains nothing and says so.",
        epilog="Examples: hpcds train tiny training.steps=50 | hpcds train tiny "
               "training.init_from=runs/tiny/train/latest.pt diffusion.regime=karras_uniform "
               "diffusion.sigma_max=1e5 training.run_dir=runs/tiny/finetune | "
               "torchrun --nproc_per_node 4 -m hpcds.cli.main train tiny "
               "parallel.model_parallel=2 (2 shards x 2 replicas; launch/train.sh does this, "
               "and runs under srun or mpirun too)")
    add_config_args(parser)
    parser.add_argument("--stop-at", type=int, metavar="STEP", default=None,
                        help="stop after optimizer step STEP and write a checkpoint there; "
                             "the schedule stays that of training.steps, so running the "
                             "same command again without --stop-at resumes and finishes "
                             "the run exactly as one uninterrupted run (e.g. to fit a job's "
                             "time limit)")
    parser.set_defaults(func=run_train)


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_train(args: argparse.Namespace) -> int:
    from hpcds.distributed import teardown_parallel

    cfg = config_from_args(args)
    if not is_first_rank():
        try:  # the other ranks of a parallel launch: train, print nothing
            train(cfg, progress=False, stop_at=args.stop_at)
        finally:
            teardown_parallel()
        return 0
    print(f"run dir: {cfg.training.run_dir}", flush=True)
    try:
        summary = train(cfg, progress=True, stop_at=args.stop_at)
    finally:
        teardown_parallel()
    if summary["resumed_from"] is not None:
        print(f"resumed from step {summary['resumed_from']}")
    print(f"steps: {summary['step']} ({summary['steps_run']} this run, {summary['device']})")
    print(f"train loss: {_fmt(summary['train_loss'], '.5g')}")
    print(f"val loss: {_fmt(summary['val_loss'], '.5g')} (EMA {_fmt(summary['val_ema_loss'], '.5g')})")
    print(f"speed: {_fmt(summary['steps_per_s'], '.3g')} steps/s, "
          f"{_fmt(summary['samples_per_s'], '.3g')} samples/s")
    print(f"normalisation: {summary['normalisation']} ({cfg.training.run_dir}/statistics.json)")
    print(f"checkpoint: {summary['checkpoint']}")
    return 0
