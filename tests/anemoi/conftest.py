"""The real anemoi-datasets, driven in subprocesses of its side venv (.venv-anemoi: it pins
zarr 2, hpcds runs on zarr 3). `scripts/setup.sh --test` (CI's setup) creates it; without it
these tests fail with the command that does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-anemoi"
READER = Path(__file__).with_name("anemoi_read.py")
SETUP_HINT = ("the side venv .venv-anemoi with the real anemoi-datasets is missing: run "
              "`bash scripts/setup_anemoi.sh` (`bash scripts/setup.sh --test` runs it)")


@pytest.fixture(scope="session")
def anemoi() -> "Anemoi":
    if not (VENV / "bin" / "anemoi-datasets").is_file():
        pytest.fail(SETUP_HINT)
    return Anemoi(VENV / "bin")


def _run(argv: list, cwd: Path, what: str) -> None:
    run = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).splitlines()[-30:])
        pytest.fail(f"{what} failed (exit {run.returncode}):\n{tail}")


class Anemoi:
    """`create(recipe, out)`: `anemoi-datasets create`; `read(store)`: what
    `anemoi.datasets.open_dataset` reads (see anemoi_read.py)."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir

    def create(self, recipe: dict, out: Path) -> Path:
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(recipe))
        _run([self.bin / "anemoi-datasets", "create", path, out, "--overwrite"], out.parent,
             f"anemoi-datasets create {path.name}")
        return out

    def read(self, store: Path, tmp: Path) -> tuple[dict, dict]:
        out = tmp / f"{Path(store).stem}-anemoi.npz"
        _run([self.bin / "python", READER, store, out], tmp,
             f"anemoi.datasets.open_dataset({store})")
        with np.load(out) as arrays:
            return dict(arrays), json.loads(out.with_suffix(".json").read_text())
