"""hpcds/cpu_malloc.py: applied once per process on glibc, off with HPCDS_KEEP_FREED_MEMORY=0.
Each case in a subprocess: the setting is process-wide and permanent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = ("from hpcds.cpu_malloc import keep_freed_memory as k; import torch; a = k(); "
        "[torch.empty(1 << 23).fill_(1) for _ in range(3)]; print(a, k())")


def _run(**env) -> str:
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                       env=dict(os.environ, **env), timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applied_once_and_can_be_turned_off():
    assert _run() == "True True"
    assert _run(HPCDS_KEEP_FREED_MEMORY="0") == "False False"
