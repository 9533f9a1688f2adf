#!/usr/bin/env bash
# Train: `hpcds train CONFIG [key=value ...]` on as many ranks as the launcher starts.
#
#   srun -n 16 launch/train.sh configs/4km.yaml parallel.model_parallel=8    # one task per GPU
#   sbatch launch/train.sbatch configs/4km.yaml                               # multi-node job
#   HPCDS_NPROC=4 launch/train.sh configs/tiny.yaml parallel.model_parallel=2 # torchrun, local
#   HPCDS_LAUNCHER=mpirun HPCDS_NPROC=2 launch/train.sh configs/tiny.yaml \
#       parallel.model_parallel=2 parallel.halo_transport=mpi                 # mpirun, local
#   launch/train.sh configs/tiny.yaml training.steps=100                      # one process
#
# Inside an srun step (SLURM_PROCID and SLURM_STEP_ID set) each task execs its own rank:
# hpcds reads rank, world size and local rank from Slurm and takes the first host of the
# step's node list as MASTER_ADDR; MASTER_PORT, unless set, is 20000 + SLURM_JOB_ID % 20000.
# With parallel.halo_transport=mpi, srun must start the tasks as MPI ranks: add --mpi=pmix (or
# --mpi=pmi2, whichever `srun --mpi=list` offers and your MPI library was built for).
# Outside Slurm (environment variables choose the launcher only, never the run's settings):
#   HPCDS_NPROC=N      local ranks (default 1: one plain process; N > 1: torchrun --standalone)
#   HPCDS_LAUNCHER=    auto (default), torchrun, or mpirun: `mpirun -n N --map-by
#                      slot:OVERSUBSCRIBE [--allow-run-as-root] python -m mpi4py -m hpcds...`
#                      with the mpirun beside the venv's python first, then the one on PATH
#   HPCDS_PYTHON=      the interpreter (default: .venv/bin/python of this checkout, else python3)
# Outputs go to training.run_dir (latest.pt, metrics.jsonl, statistics.json, config.yaml).
set -euo pipefail
# shellcheck source=launch/_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
hpcds_launch train "${BASH_SOURCE[0]}" "$@"
