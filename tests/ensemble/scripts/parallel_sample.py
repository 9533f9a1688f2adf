"""Parallel sampling that dies part-way (launched by tests/ensemble/test_parallel_sampling.py):

    torchrun --standalone --nproc_per_node=3 parallel_sample.py --die-rank 1 --die-after 2 \
        tiny run.out_dir=... parallel.model_parallel=3 sampling.output=...

Every rank runs `generate` exactly as `hpcds sample` does; rank --die-rank exits hard
(os._exit, no cleanup: as if the node were lost) after its --die-after-th batch, so the
launcher tears the job down with some batches flagged, maybe one written but not flagged,
and the rest unwritten. The test then resumes with `hpcds sample` and compares the store
with an uninterrupted single-process run.
"""

from __future__ import annotations

import argparse
import os

import torch

from hpcds.config.load import load_config
from hpcds.distributed import discover_env, setup_parallel, teardown_parallel
from hpcds.ensemble.generate import generate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--die-rank", type=int, default=-1)
    ap.add_argument("--die-after", type=int, default=0, help="batches before dying")
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    state = setup_parallel(cfg.parallel)
    rank, batches = discover_env().rank, []

    def die(t, members):
        batches.append((t, tuple(members)))
        if rank == args.die_rank and len(batches) == args.die_after:
            print(f"rank {rank}: dying after {len(batches)} batches", flush=True)
            os._exit(17)

    generate(cfg, parallel=state, on_write=die, progress=False)
    print(f"rank {rank}: finished {len(batches)} batches", flush=True)
    teardown_parallel()


if __name__ == "__main__":
    main()
