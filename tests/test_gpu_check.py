"""perf/gpu_check.sh on a CPU machine: it refuses clearly without a GPU, and every one of its
steps runs in its dry mode (toy sizes on the CPU), writing the record it writes on a GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "perf" / "gpu_check.sh"


def _run(*args, env=None, timeout=300):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_refuses_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run")
    # a PATH without nvidia-smi, whatever the machine has
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "python3", "env", "dirname"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    p = _run("--out", str(tmp_path / "out"), env=dict(os.environ, PATH=str(bin_dir)))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: no GPU here"), p.stderr
    assert "--dry-run" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written


def test_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "out"
    p = _run("--dry-run", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    records = list(out.glob("gpu-*-dry.json"))
    assert len(records) == 1 and (out / "gpu-check.log").is_file()
    record = json.loads(records[0].read_text())
    steps = {s["step"]: s["rc"] for s in record["steps"]}
    assert steps == {"device": 0, "build": 0, "tests": 0, "kernels": 0, "shard": 0}
    # the GPU tests were collected (not run) and the shard step measured every backend asked
    log = (out / "gpu-check.log").read_text()
    assert "tests/gpu/test_kernels_gpu.py::" in log and "tests collected" in log
    rows = record["shard"]["rows"]
    assert [r["backend"] for r in rows] == ["native", "reference"]
    assert all(r["fwd_bwd_ms"] > 0 and r["sampler_step_ms"] > 0 for r in rows)
    assert record["shard"]["dry_run"] and record["shard"]["planner_terms_gib"]["activations"] >= 0
