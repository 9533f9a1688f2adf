#!/usr/bin/env bash
# Sample an ensemble: `hpcds sample CONFIG [key=value ...] [--checkpoint PATH] [--overwrite]`
# on as many ranks as the launcher starts; every ensemble group of parallel.model_parallel ranks
# writes its own (member, cells) regions of sampling.output; rerunning resumes.
#
#   srun -n 16 launch/ensemble.sh configs/4km.yaml parallel.model_parallel=8  # 2 groups of 8
#   sbatch launch/ensemble.sbatch configs/4km.yaml                            # multi-node job
#   HPCDS_NPROC=4 launch/ensemble.sh configs/tiny.yaml parallel.model_parallel=2 \
#       --checkpoint runs/tiny/train/latest.pt                                # torchrun, local
#   HPCDS_LAUNCHER=mpirun HPCDS_NPROC=2 launch/ensemble.sh configs/tiny.yaml \
#       parallel.model_parallel=2 parallel.halo_transport=mpi                 # mpirun, local
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
set -euo pipefail
# shellcheck source=launch/_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
hpcds_launch sample "${BASH_SOURCE[0]}" "$@"
