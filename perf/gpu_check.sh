#!/usr/bin/env bash
# The first-GPU check: builds the CUDA kernels, runs the GPU tests, the full-size kernel
# benchmark and one 48-way 4km shard's step, and writes perf/results/gpu-<date>.{md,json}
# (see perf/gpu_check.py). Refuses without a GPU; --dry-run runs its steps on a CPU.
#   bash perf/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--steps a,b]
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's venv where there is one (scripts/setup.sh), else the machine's python3
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PY" perf/gpu_check.py --python "$PY" "$@"
