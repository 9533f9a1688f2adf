"""launch/profile.sh on a CPU machine: unprofiled with a notice, the nsys command line it
would run (through a stand-in nsys and nvidia-smi), rank selection, config form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = str(ROOT / "launch" / "profile.sh")
RANK_VARS = ("SLURM_PROCID", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def run(args, path_prefix: str | None = None, **env):
    base = {k: v for k, v in os.environ.items() if k not in RANK_VARS
            and not k.startswith("HPCDS_PROFILE")}
    if path_prefix:
        base["PATH"] = f"{path_prefix}:{base['PATH']}"
    return subprocess.run(["bash", PROFILE, *args], capture_output=True, text=True,
                          env={**base, **env}, timeout=60, cwd=ROOT)


def test_without_gpu_runs_the_command_unprofiled_with_a_notice():
    out = run(["--ranks", "0", "--", sys.executable, "-c", "print('the command ran')"],
              path_prefix=None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "the command ran"
    notice = [line for line in out.stderr.splitlines() if line.startswith("profile.sh:")]
    assert len(notice) == 1 and "unprofiled" in notice[0] and "rank 0" in notice[0]


def test_rank_not_chosen_runs_silently_and_exit_status_passes_through():
    out = run(["--ranks", "0,3", "--", "bash", "-c",
               "env | grep ^HPCDS_PROFILE_; echo ran; exit 7"], SLURM_PROCID="1")
    assert out.returncode == 7
    assert out.stdout.strip() == "ran" and out.stderr == ""  # no environment handoff


def _fake_tools(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: fake'\n")
    (bin_dir / "nsys").write_text('#!/bin/sh\necho "nsys $*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return str(bin_dir)


def test_chosen_rank_runs_under_nsys_with_traces_capture_range_and_report_per_rank(tmp_path):
    fake = _fake_tools(tmp_path)
    out = run(["--ranks", "0,3", "--out", str(tmp_path / "prof"), "--", "python", "train.py",
               "profile.start_step=20"], fake, SLURM_PROCID="3")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("nsys profile ")
    assert line.endswith(" python train.py profile.start_step=20")  # the command as given
    assert "--trace=cuda,nvtx,osrt,mpi" in line
    assert f"--output={tmp_path}/prof/python-rank3" in line
    assert "--capture-range=cudaProfilerApi --capture-range-end=stop" in line
    assert "profile.start_step/num_steps window" in out.stderr
    whole = run(["--capture", "all", "--out", str(tmp_path), "--", "true"], fake, RANK="0")
    assert "--capture-range" not in whole.stdout and "rank0" in whole.stdout


def test_config_form_hands_the_capture_window_to_train_sh_as_overrides(tmp_path):
    fake = _fake_tools(tmp_path)
    out = run(["--start-step", "20", "--num-steps", "4", "--out", str(tmp_path),
               "configs/tiny.yaml", "training.steps=30"], fake, SLURM_PROCID="0")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.endswith(f" {ROOT}/launch/train.sh configs/tiny.yaml training.steps=30 "
                         "profile.start_step=20 profile.num_steps=4")
    assert f"--output={tmp_path}/train-rank0" in line and "steps 20..23" in out.stderr


def test_config_form_runs_the_target_with_config_and_overrides():
    out = run(["configs/tiny.yaml", "training.steps=2"], HPCDS_PROFILE_TARGET="echo",
              HPCDS_PROFILE_RANKS="5")  # an unprofiled rank gets the same window
    assert out.returncode == 0
    assert out.stdout.strip() == ("configs/tiny.yaml training.steps=2 profile.start_step=10 "
                                  "profile.num_steps=5")
    whole = run(["--capture", "all", "configs/tiny.yaml"], HPCDS_PROFILE_TARGET="echo",
                HPCDS_PROFILE_RANKS="5")
    assert whole.stdout.strip() == "configs/tiny.yaml"  # the whole run: no window


def test_the_window_overrides_are_valid_config(tmp_path):
    target = tmp_path / "show_profile"
    target.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; from hpcds.config.load "
                      "import load_config; print(load_config(sys.argv[1], sys.argv[2:]).profile)'"
                      ' "$@"\n')
    target.chmod(0o755)
    out = run(["--start-step", "7", "--num-steps", "3", "configs/tiny.yaml"],
              HPCDS_PROFILE_TARGET=str(target), HPCDS_PROFILE_RANKS="5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ProfileConfig(start_step=7, num_steps=3)"


def test_bad_options_are_one_line_errors():
    for args in (["--bogus", "--", "true"], ["--capture", "some", "--", "true"], []):
        out = run(args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
