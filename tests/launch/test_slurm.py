"""Launching under a real Slurm cluster (single node, started by scripts/slurm_cluster.sh)."""

from __future__ import annotations

import json
import socket
import sys

import pytest

pytestmark = pytest.mark.timeout(600)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def test_srun_two_ranks_all_reduce_over_gloo(slurm):
    # MASTER_PORT: a free one (others may test on this machine); the address comes from Slurm
    out = slurm.srun(2, [sys.executable, "tests/launch/slurm_allreduce.py"],
                     MASTER_PORT=str(free_port()))
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = sorted(_json_lines(out.stdout), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world"] == 2 for r in ranks)
    assert sorted(r["local_rank"] for r in ranks) == [0, 1]  # one node: local = global
    assert all(r["launcher"] == "slurm" and r["addr"] == "localhost" for r in ranks)
    assert len({(r["addr"], r["port"]) for r in ranks}) == 1  # one rendezvous
    assert all(r["sum"] == 3.0 for r in ranks)  # 1 + 2
    assert all(r["gathered"] == [0.0, 1.0] for r in ranks)


def test_srun_request_larger_than_the_node_fails_fast(slurm):
    out = slurm.srun(64, ["true"], timeout=60)
    assert out.returncode != 0
