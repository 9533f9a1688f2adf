"""A real single-node Slurm cluster for the launch tests (scripts/slurm_cluster.sh).

The session fixture `slurm` starts the cluster (installing Debian's slurm-wlm + munge when
running as root and they are missing) and stops it afterwards, unless it was already running
before the session. It skips only when Slurm is not installed and this is not root.

    def test_train(slurm):
        out = slurm.srun(2, ["launch/train.sh", "configs/tiny.yaml", "training.steps=2"])
        assert out.returncode == 0, out.stderr
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"


@dataclass(frozen=True)
class SlurmCluster:
    conf: str  # the generated slurm.conf

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment with SLURM_CONF and one thread per rank."""
        return {**os.environ, "SLURM_CONF": self.conf, "OMP_NUM_THREADS": "1", **extra}

    def srun(self, ntasks: int, command: list[str], timeout: float = 240,
             extra_args: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
        """`srun -n ntasks -I5 --kill-on-bad-exit=1 command` from the repository root; -I5:
        fail within 5 s instead of pending forever when the node is too small."""
        return subprocess.run(
            ["srun", "-n", str(ntasks), "-I5", "--kill-on-bad-exit=1", *extra_args,
             *command], cwd=ROOT, env=self.env(**env), capture_output=True, text=True,
            timeout=timeout)


def _cluster_state() -> int:
    return subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode


@pytest.fixture(scope="session")
def slurm():
    if shutil.which("srun") is None and os.geteuid() != 0:
        pytest.skip("Slurm is not installed and installing it (Debian slurm-wlm, munge) "
                    "needs root: run `bash scripts/setup.sh --test` as root")
    was_running = _cluster_state() == 0
    start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                           timeout=600)
    assert start.returncode == 0, f"slurm_cluster.sh start failed:\n{start.stderr}"
    conf = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True,
                          check=True).stdout.strip().split("=", 1)[1]
    try:
        yield SlurmCluster(conf)
    finally:
        if not was_running:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
