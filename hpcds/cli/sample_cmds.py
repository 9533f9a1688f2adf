"""`hpcds sample`: generate an HR ensemble from a trained checkpoint into a zarr store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from hpcds.cli.common import add_config_args
from hpcds.config.load import load_config, save_resolved, to_yaml


def register(commands) -> None:
    parser = commands.add_parser(
        "sample", help="generate an HR ensemble from a trained checkpoint",
        description="Downscale every date of the LR store (or data.start_date … "
                    "data.end_date) into sampling.members HR members per LR ensemble member, "
                    "with the checkpoint's EMA weights (sampling.use_ema), the solver "
                    "sampling.solver over the sampling.schedule of sampling.steps steps, "
                    "seeded by sampling.seed, from diffusion.sigma_max (the demo: 10). The "
                    "noise is white or, for a model trained with diffusion.noise="
                    "residual_spectrum, coloured with the spectrum its checkpoint holds; "
                    "a variable the model was trained on in log1p(x/ε) (data.log_transform; "
                    "tp in every preset) is written as ε·expm1(·) with the checkpoint's ε, "
                    "whatever this config says; "
                    "variables in data.nonnegative (tp in every preset) are clipped at 0. "
                    "Writes an anemoi-layout zarr at sampling.output "
                    "(data: time, variable, ensemble, cell). Resumable: rerunning the same "
                    "command skips the (date, member) pairs already written; a store written "
                    "with other settings is an error unless --overwrite.")
    add_config_args(parser)
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="checkpoint to sample from (default: sampling.checkpoint, else "
                             "training.run_dir/latest.pt)")
    parser.add_argument("--members", type=int, metavar="M",
                        help="HR members per LR member (sets sampling.members)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output store instead of resuming it: "
                             "the new one is built as OUTPUT.replacing and renamed over "
                             "the old only when complete (a stopped run leaves the old "
                             "store as it was)")
    parser.set_defaults(func=run_sample)


def _config(args: argparse.Namespace, echo: bool = True):
    config, overrides = args.config, list(args.overrides)
    if "=" in config:
        config, overrides = "tiny", [config, *overrides]
    if args.members is not None:
        overrides.append(f"sampling.members={args.members}")
    cfg = load_config(config, overrides)
    if args.checkpoint:  # set here, not as an override: a path may hold YAML-special chars
        cfg.sampling.checkpoint = str(args.checkpoint)
    if echo and not args.quiet:
        print(f"# resolved config ({config} {' '.join(overrides)})".rstrip(), file=sys.stderr)
        print(to_yaml(cfg), file=sys.stderr)
    return cfg


def run_sample(args: argparse.Namespace) -> int:
    # torch, the model and the process groups: only when sampling
    from hpcds.distributed import discover_env, setup_parallel, teardown_parallel
    from hpcds.ensemble.generate import generate

    root = discover_env().rank == 0  # under torchrun/srun/mpirun: rank 0 prints, all sample
    cfg = _config(args, echo=root)
    out = Path(cfg.sampling.output)
    state = setup_parallel(cfg.parallel)  # a world of one initialises nothing
    try:
        if root and state.layout.world_size > 1:
            print(f"# parallel sampling: {state.layout.describe()}", file=sys.stderr)
        result = generate(cfg, overwrite=args.overwrite, progress=None, parallel=state,
                          report=(None if args.quiet or not root else
                                  lambda line: tqdm.write(line, file=sys.stderr)))
    finally:
        teardown_parallel()
    if not root:
        return 0
    saved = save_resolved(cfg, out.parent, name=f"{out.name}.config.yaml")
    total = result.n_dates * result.n_members
    print(f"ensemble: {out} ({result.n_dates} dates x {result.n_members} members)")
    print(f"  config: {saved}")
    if result.skipped:
        print(f"  resumed: {result.skipped} of {total} (date, member) fields were already done")
    print(f"sampled {result.written} fields in {result.seconds:.1f} s "
          f"({result.samples_per_s:.3f} samples/s)")
    return 0
