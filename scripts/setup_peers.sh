#!/usr/bin/env bash
# The side venv .venv-peers for the peer benchmark perf/peer_anemoi.py: torch 2.13.0 (CPU),
# anemoi-models 0.12.1 and torch-geometric (pinned in scripts/peers-requirements.txt), and this
# checkout's hpcds installed editable WITHOUT its dependencies (no deepspeed, mpi4py, zarr...:
# building the network needs only the few listed in the requirements file). A side venv, not
# .venv: anemoi-models pulls hydra, pydantic and torch-geometric, which hpcds must not depend on.
#   bash scripts/setup_peers.sh && .venv-peers/bin/python perf/peer_anemoi.py --shape small
# `bash scripts/setup.sh --peers` runs this too. Idempotent: a venv whose stamp matches the
# requirements file, pyproject.toml and this checkout's path is left as it is (< 1 s); a first
# install takes ~1 min. A failed install leaves no stamp, so the next run retries.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-peers req=scripts/peers-requirements.txt
# the editable install points at this checkout: another path means another install
want="$({ cat "$req" pyproject.toml; echo "$PWD"; } | sha256sum | cut -d' ' -f1)"
stamp="$venv/hpcds-requirements.sha256"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: $venv up to date"
  exit 0
fi
PY="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
rm -f "$stamp"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
{ pip install -r "$req" && pip install --no-deps -e .; } >"$venv/setup.log" 2>&1 \
  || { cat "$venv/setup.log" >&2; echo "setup: installing $venv failed" >&2; exit 1; }
"$venv/bin/python" - <<'EOF'
import anemoi.models, torch, torch_geometric
import hpcds.models  # noqa: F401  (the network's imports resolve without hpcds's extras)
print(f"setup: .venv-peers: anemoi-models {anemoi.models.__version__}, torch {torch.__version__}, "
      f"torch-geometric {torch_geometric.__version__}, hpcds (editable)")
EOF
echo "$want" >"$stamp"
