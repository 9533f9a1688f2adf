"""The project's top level and native build: CMake configures with the Python modules, and
nvcc compiles and links the CUDA targets (sm_90) where a CUDA compiler exists; nothing built
for CUDA can run here, so the CUDA module is only imported and its argument checks exercised.
(The CPU module is built by scripts/setup.sh and tested in tests/kernels.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_layout():
    for name in ("CMakeLists.txt", "pyproject.toml", "hpcds", "kernels", "launch", "configs",
                 "tests", "perf"):
        assert (ROOT / name).exists(), name


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed (scripts/setup.sh installs it)")
    build = tmp_path_factory.mktemp("build")
    run = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build),
                          f"-DPython_EXECUTABLE={sys.executable}"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return build, run.stdout


def test_cmake_configures_cleanly(configured):
    _, out = configured
    assert "hpcds kernels:" in out
    assert "Python modules ON" in out, out  # nanobind found through the venv's Python


def test_nvcc_compiles_and_links_cuda_targets(configured):
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH: the CUDA targets are only built where a CUDA compiler is")
    build, out = configured
    assert "CUDA ON" in out, out  # nvcc exists, so CMake must have enabled CUDA
    run = subprocess.run(["cmake", "--build", str(build), "-j2", "--target",
                          "hpcds_kernels_cuda", "_hpcds_native_cuda"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    flags = (build / "CMakeFiles" / "hpcds_kernels_cuda.dir" / "flags.make").read_text()
    assert "sm_90" in flags, flags  # Hopper code
    # linked completely (Python dlopens with RTLD_NOW) and its checks run before any CUDA call
    probe = ("import torch, _hpcds_native_cuda as m\n"
             "z = torch.zeros(1, 1, 1, 4)\n"
             "try:\n"
             "    m.layer_norm_forward(z[0], z[0, 0], z[0, 0], z[0], z[0, :, 0], z[0, :, 0], 1e-6, 0)\n"
             "except ValueError as e:\n"
             "    print('rejected:', e)\n")
    run = subprocess.run([sys.executable, "-c", probe], cwd=build, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert "wrong device" in run.stdout, run.stdout
