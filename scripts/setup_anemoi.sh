#!/usr/bin/env bash
# The side venv .venv-anemoi with the real anemoi-datasets (pinned in
# scripts/anemoi-requirements.txt), for tests/anemoi: anemoi-datasets 0.5.x pins zarr<=2.18.7,
# so it cannot live in .venv beside zarr 3. scripts/setup.sh --test runs this.
# Idempotent: a venv whose stamp matches the requirements file is left as it is (< 1 s);
# a first install takes ~1 min. A failed install leaves no stamp, so the next run retries.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-anemoi req=scripts/anemoi-requirements.txt
want="$(sha256sum "$req" | cut -d' ' -f1)"
stamp="$venv/hpcds-requirements.sha256"
if [ -x "$venv/bin/anemoi-datasets" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: $venv up to date"
  exit 0
fi
PY="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
rm -f "$stamp"
"$venv/bin/python" -m pip --disable-pip-version-check -q install -r "$req" >"$venv/setup.log" 2>&1 \
  || { cat "$venv/setup.log" >&2; echo "setup: installing $venv failed" >&2; exit 1; }
"$venv/bin/python" -c "import anemoi.datasets, zarr; print(f'setup: $venv: anemoi-datasets {anemoi.datasets.__version__}, zarr {zarr.__version__}')"
echo "$want" >"$stamp"
