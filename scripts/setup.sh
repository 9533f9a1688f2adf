#!/usr/bin/env bash
# Set up hpcds in ./.venv on a fresh machine.
#   bash scripts/setup.sh          runtime: system data packages, torch, hpcds (editable)
#   bash scripts/setup.sh --test   also test-only references (.testdata), test packages and
#                                  the side venv .venv-anemoi (the real anemoi-datasets)
#   bash scripts/setup.sh --peers  also the side venv .venv-peers (anemoi-models 0.12.1 for the
#                                  peer benchmark perf/peer_anemoi.py; scripts/setup_peers.sh)
# CPU machines get the CPU build of torch (`pip install torch==2.13.0`, on disk here) instead of
# a multi-GB CUDA build; on a machine with an NVIDIA driver the torch already in the venv (or
# pip's default CUDA build) is kept. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0 want_peers=0
for arg in "$@"; do
  case "$arg" in
    --test) want_tests=1 ;;
    --peers) want_peers=1 ;;
    *) echo "setup: unknown option $arg (options: --test, --peers)" >&2; exit 2 ;;
  esac
done

apt_updated=0
apt_install() {  # apt_install PACKAGE...: Debian packages, without their recommends
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: run 'sudo apt-get install --no-install-recommends $*'" >&2
    exit 1
  fi
  [ "$apt_updated" = 1 ] || { apt-get update -qq >/dev/null; apt_updated=1; }
  echo "setup: installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Debian packages: real terrain (ETOPO5) for the benchmark --------------------------
[ -f /usr/share/ferret-vis/data/etopo5.cdf ] || apt_install ferret-datasets

# --- Python environment ------------------------------------------------------------------
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA driver found: installing pip's default (CUDA) torch"
    pip install "torch>=2.4"
  else
    echo "setup: no GPU: installing the CPU build torch==2.13.0"
    pip install torch==2.13.0
  fi
fi
extras="mpi,grib,native"
[ "$want_tests" = 1 ] && extras="$extras,test"
pip install -e ".[$extras]" >.venv/setup.log 2>&1 || { cat .venv/setup.log >&2; exit 1; }
.venv/bin/python -c "import hpcds, torch, zarr; print(f'setup: hpcds {hpcds.__version__}, torch {torch.__version__}, zarr {zarr.__version__}')"

# --- native kernels (kernels/cuda/): the CPU library, and the CUDA one on a GPU machine -----
# Built into build/native/, where hpcds/nn/native_kernels.py looks (~40 s the first time; a
# second run re-checks in under a second).
command -v cmake >/dev/null 2>&1 || apt_install cmake
cuda=OFF targets=_hpcds_native
if command -v nvidia-smi >/dev/null 2>&1 && command -v nvcc >/dev/null 2>&1; then
  cuda=ON targets="_hpcds_native _hpcds_native_cuda"
fi
mkdir -p build
{ cmake -S . -B build/native -DPython_EXECUTABLE="$PWD/.venv/bin/python" -DHPCDS_CUDA=$cuda \
    && cmake --build build/native --target $targets -j"$(nproc)"; } >build/native.log 2>&1 \
  || { cat build/native.log >&2; echo "setup: building the native kernels failed" >&2; exit 1; }
echo "setup: native kernels built in build/native ($targets)"

# --- test-only references ---------------------------------------------------------------
if [ "$want_tests" = 1 ]; then
  command -v cmake >/dev/null 2>&1 || apt_install cmake
  # a real single-node Slurm cluster for tests/launch (scripts/slurm_cluster.sh starts it)
  { command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null 2>&1 \
    || apt_install slurm-wlm munge
  bash scripts/fetch_testdata.sh
  # tests/anemoi drive the real anemoi-datasets; it pins zarr 2, hence its own venv
  bash scripts/setup_anemoi.sh
fi

# --- the peer benchmark's side venv (never a dependency of hpcds) --------------------------
if [ "$want_peers" = 1 ]; then
  bash scripts/setup_peers.sh
fi
