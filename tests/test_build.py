"""The project's top level and native build: CMake configures cleanly (kernels come later)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_layout():
    for name in ("CMakeLists.txt", "pyproject.toml", "hpcds", "kernels", "launch", "configs",
                 "tests", "perf"):
        assert (ROOT / name).exists(), name


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_configures_cleanly(tmp_path):
    run = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "hpcds kernels:" in run.stdout
