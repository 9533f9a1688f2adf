"""launch/train.sh and launch/ensemble.sh without running hpcds: which command each launcher
path runs, through a stand-in Python (HPCDS_PYTHON) and a stand-in mpirun beside it. The real
runs under srun, torchrun and mpirun are in test_slurm.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN, ENSEMBLE = str(ROOT / "launch" / "train.sh"), str(ROOT / "launch" / "ensemble.sh")
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
               "PMI_RANK")


@pytest.fixture
def fake_bin(tmp_path):
    """bin/python prints its arguments and the variables a rank reads; bin/mpirun says it
    is Open MPI and prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        '#!/bin/sh\necho "python $* | port=${MASTER_PORT:-} procid=${SLURM_PROCID:-}"\n')
    (bin_dir / "mpirun").write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "mpirun (Open MPI) 5.0.11"; exit 0; }\n'
        'echo "mpirun $*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def launch(script: str, args: list[str], fake_bin: Path | None = None, **env: str):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCDS_"))
            and k not in LAUNCH_VARS}
    if fake_bin is not None:
        base["HPCDS_PYTHON"] = str(fake_bin / "python")
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60,
                          env={**base, **env}, cwd=ROOT)


@pytest.mark.parametrize("script", [TRAIN, ENSEMBLE])
def test_help_names_the_launchers_and_their_variables(script):
    out = launch(script, ["--help"])
    assert out.returncode == 0 and out.stderr == ""
    for word in ("srun", "HPCDS_NPROC", "HPCDS_LAUNCHER", "mpirun", "torchrun", "--mpi=pmix",
                 "MASTER_PORT"):
        assert word in out.stdout, word
    assert not out.stdout.startswith("!")  # the header, not the shebang


def test_one_process_by_default(fake_bin):
    out = launch(TRAIN, ["configs/tiny.yaml", "training.steps=2", "--quiet"], fake_bin)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("python -m hpcds.cli.main train configs/tiny.yaml "
                                  "training.steps=2 --quiet | port= procid=")


def test_srun_step_execs_one_rank_with_a_port_from_the_job_id(fake_bin):
    step = {"SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "40123"}
    out = launch(ENSEMBLE, ["tiny", "--checkpoint", "a b.pt"], fake_bin, **step)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.strip() == ("python -m hpcds.cli.main sample tiny --checkpoint a b.pt "
                                  "| port=20123 procid=1")  # 20000 + 40123 % 20000
    kept = launch(TRAIN, ["tiny"], fake_bin, MASTER_PORT="31000", **step)
    assert "port=31000 procid=1" in kept.stdout


def test_batch_script_shell_is_not_a_rank(fake_bin):
    """sbatch's own shell has SLURM_PROCID=0 but no step: a local launch that drops it, so
    hpcds does not wait for SLURM_NTASKS ranks."""
    out = launch(TRAIN, ["tiny"], fake_bin, SLURM_PROCID="0", SLURM_NTASKS="8",
                 SLURM_JOB_ID="7")
    assert out.stdout.strip() == "python -m hpcds.cli.main train tiny | port= procid="


def test_several_local_ranks_use_torchrun(fake_bin):
    out = launch(ENSEMBLE, ["tiny", "parallel.model_parallel=3"], fake_bin, HPCDS_NPROC="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("python -m torch.distributed.run --standalone "
                                 "--nproc_per_node=3 -m hpcds.cli.main sample tiny "
                                 "parallel.model_parallel=3 |")
    assert "torchrun --standalone: 3 local ranks" in out.stderr
    one = launch(TRAIN, ["tiny"], fake_bin, HPCDS_LAUNCHER="torchrun")
    assert "--nproc_per_node=1 -m hpcds.cli.main train tiny" in one.stdout


def test_mpirun_beside_the_python_with_open_mpi_flags(fake_bin):
    out = launch(TRAIN, ["tiny", "parallel.halo_transport=mpi"], fake_bin,
                 HPCDS_LAUNCHER="mpirun", HPCDS_NPROC="2", SLURM_PROCID="0",
                 SLURM_STEP_ID="3")  # an explicit launcher wins inside a step too
    assert out.returncode == 0, out.stderr
    root = " --allow-run-as-root" if os.geteuid() == 0 else ""
    assert out.stdout.strip() == (f"mpirun -n 2 --map-by slot:OVERSUBSCRIBE{root} "
                                  f"{fake_bin}/python -m mpi4py -m hpcds.cli.main train tiny "
                                  "parallel.halo_transport=mpi")
    assert f"{fake_bin}/mpirun" in out.stderr


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "no config"),
    (["--quiet"], {}, "the first argument is the config"),
    (["tiny"], {"HPCDS_NPROC": "0"}, "HPCDS_NPROC must be a positive integer"),
    (["tiny"], {"HPCDS_LAUNCHER": "srun"}, "HPCDS_LAUNCHER must be auto, torchrun or mpirun"),
])
def test_mistakes_are_one_line_errors(fake_bin, args, env, message):
    out = launch(TRAIN, args, fake_bin, **env)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
