#!/usr/bin/env bash
# Nsight Systems around one rank's command, on the ranks chosen; the others run it unprofiled.
#
#   srun -n 16 launch/profile.sh --ranks 0,3 configs/4km.yaml training.steps=40
#   srun -n 16 launch/profile.sh --ranks 0 -- launch/ensemble.sh configs/4km.yaml
#   launch/profile.sh --ranks all --out prof/ -- python my_script.py      # one process: rank 0
#
# A first argument that is a config (*.yaml, *.yml) runs `launch/train.sh CONFIG [overrides]
# profile.start_step=N profile.num_steps=M` ($HPCDS_PROFILE_TARGET to change): the trainer
# calls cudaProfilerStart before step N and cudaProfilerStop after M steps (the config's
# `profile` section); with --capture all no window is added. After `--` any command runs as
# given: put the window in its overrides yourself, e.g.
#   launch/profile.sh --ranks 0 -- launch/train.sh configs/4km.yaml profile.start_step=20 \
#       profile.num_steps=5
# Options (environment variable in brackets):
#   --ranks LIST       comma-separated global ranks to profile, or "all"   [HPCDS_PROFILE_RANKS, 0]
#   --start-step N     config form: first step inside the capture range    [10]
#   --num-steps N      config form: steps inside the capture range         [5]
#   --capture MODE     "range" (cudaProfilerApi: nsys records only between the trainer's
#                      cudaProfilerStart and Stop, see launch/README.md) or "all" (the whole run)
#                                                                          [HPCDS_PROFILE_CAPTURE, range]
#   --out DIR          reports: DIR/<name>-rank<R>.nsys-rep                [HPCDS_PROFILE_DIR, profiles]
# Traces cuda, nvtx, osrt and mpi (NVTX ranges mark data, halo exchange, encoder, processor,
# decoder, optimizer and sampler steps). The rank is SLURM_PROCID, RANK, OMPI_COMM_WORLD_RANK
# or PMI_RANK (first set), else 0. Without `nsys` or without a GPU the command runs unprofiled
# after a one-line notice.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ranks="${HPCDS_PROFILE_RANKS:-0}"
start_step=10
num_steps=5
capture="${HPCDS_PROFILE_CAPTURE:-range}"
out_dir="${HPCDS_PROFILE_DIR:-profiles}"
die() { echo "profile.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks="${2:?--ranks needs a value}"; shift 2 ;;
    --start-step) start_step="${2:?}"; shift 2 ;;
    --num-steps) num_steps="${2:?}"; shift 2 ;;
    --capture) capture="${2:?}"; shift 2 ;;
    --out) out_dir="${2:?}"; shift 2 ;;
    --) shift; break ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' \
                 "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || die "no command: give a config (launch/train.sh runs it) or -- COMMAND"
case "$capture" in range|all) ;; *) die "--capture must be range or all, not $capture" ;; esac
[[ "$start_step" =~ ^[0-9]+$ && "$num_steps" =~ ^[1-9][0-9]*$ ]] \
  || die "--start-step must be >= 0 and --num-steps >= 1"
config_form=0
case "$1" in
  *.yaml|*.yml)  # every rank gets the same config; the window matters on profiled ranks only
    config_form=1
    set -- "${HPCDS_PROFILE_TARGET:-$here/train.sh}" "$@"
    if [ "$capture" = range ]; then
      set -- "$@" "profile.start_step=$start_step" "profile.num_steps=$num_steps"
    fi
    ;;
esac

rank="${SLURM_PROCID:-${RANK:-${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}}}"
chosen=0
if [ "$ranks" = all ]; then
  chosen=1
else
  IFS=, read -ra wanted <<<"$ranks"
  for r in "${wanted[@]}"; do [ "$r" = "$rank" ] && chosen=1; done
fi
[ "$chosen" = 1 ] || exec "$@"

why=""
if ! command -v nsys >/dev/null 2>&1; then why="nsys is not installed"
elif ! nvidia-smi -L >/dev/null 2>&1; then why="no GPU"; fi
if [ -n "$why" ]; then
  echo "profile.sh: rank $rank: $why here: running the command unprofiled" >&2
  exec "$@"
fi
mkdir -p "$out_dir"
name="$(basename "$1")"; name="${name%.*}"
mpi_impl=openmpi
[ -n "${PMI_RANK:-}" ] && [ -z "${OMPI_COMM_WORLD_RANK:-}" ] && mpi_impl=mpich
args=(profile --trace=cuda,nvtx,osrt,mpi --mpi-impl="$mpi_impl" --force-overwrite=true
      --output="$out_dir/$name-rank$rank")
[ "$capture" = range ] && args+=(--capture-range=cudaProfilerApi --capture-range-end=stop)
window=""
if [ "$capture" = range ] && [ "$config_form" = 1 ]; then
  window=" (steps $start_step..$((start_step + num_steps - 1)))"
elif [ "$capture" = range ]; then
  window=" (the command's profile.start_step/num_steps window)"
fi
echo "profile.sh: rank $rank: nsys ${args[*]}$window" >&2
exec nsys "${args[@]}" "$@"
