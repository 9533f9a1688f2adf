"""perf/peer_anemoi.py, the side-by-side benchmark against anemoi-models, at its tiny shape with
one repeat: the hpcds side runs in both training configs and writes every figure it prints.
It runs in the side venv .venv-peers (scripts/setup_peers.sh), which CI does not build: without
it these tests are skipped. No timing is asserted, only that the figures exist and the shapes
match the ones the script's docstring states."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "perf" / "peer_anemoi.py"
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not PEERS_PYTHON.is_file(),
    reason="no .venv-peers (the peer benchmark's side venv): `bash scripts/setup_peers.sh`")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds hpcds
    return dict(env, OMP_NUM_THREADS="1")


def _run(tmp_path: Path, *args: str, timeout: int = 120) -> tuple[str, dict]:
    out = tmp_path / "peer.json"
    p = subprocess.run([str(PEERS_PYTHON), str(SCRIPT), "--shape", "tiny", "--repeats", "1",
                        "--threads", "1", "--json", str(out), *args],
                       cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env=_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout, json.loads(out.read_text())


def test_hpcds_side_tiny(tmp_path):
    stdout, record = _run(tmp_path, "--sides", "hpcds", "--checkpoint", "both", "--no-infer")
    rows = record["rows"]
    assert [(r["side"], r["config"]) for r in rows] == [("hpcds", "ckpt-off"),
                                                          ("hpcds", "ckpt-on")]
    assert record["matmul_gflops"] > 0 and "of peak" in stdout and "hpcds" in stdout
    for r in rows:
        assert (r["n_hr"], r["n_hidden"]) == (1024, 64)
        # 32 HR nodes per hidden node into the encoder, 3 hidden nodes per HR node out
        assert r["encoder_edges"] == 32 * r["n_hidden"] and r["decoder_edges"] == 3 * r["n_hr"]
        assert r["hpcds_window"] == 2 * r["window_half_width"] == 32
        assert r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 and r["peak_rss_gib"] > 0
        assert 0 < r["flops"]["fwd"] < r["flops"]["fwd_bwd"]
        p = r["params"]
        assert p["total"] == p["conditioning"] + p["without_conditioning"] > p["conditioning"] > 0
    off, on = rows
    # checkpointing recomputes the forward in backward: more FLOPs, the same forward
    assert on["flops"]["fwd_bwd"] > off["flops"]["fwd_bwd"]
    assert on["flops"]["fwd"] == off["flops"]["fwd"]


@pytest.mark.slow
def test_both_sides_tiny_profiled(tmp_path):
    """Both networks at the same shapes, with the profiler's per-block tables (~20 s)."""
    stdout, record = _run(tmp_path, "--checkpoint", "off", "--no-infer", "--profile",
                          "--profile-rows", "3")
    by_side = {r["side"]: r for r in record["rows"]}
    anemoi, hpcds = by_side["anemoi"], by_side["hpcds"]
    assert anemoi["anemoi_window_size"] * 2 == hpcds["hpcds_window"]
    for key in ("n_hr", "n_hidden", "encoder_edges", "decoder_edges"):
        assert anemoi[key] == hpcds[key]
    # the trunks (everything but the noise conditioning) are the same size to within 1 %
    a, h = (r["params"]["without_conditioning"] for r in (anemoi, hpcds))
    assert abs(a - h) < 0.01 * h
    for side, block in (("anemoi", "processor.proc.3"), ("hpcds", "processor.3")):
        for what in ("forward", "backward"):
            assert f"=== {side} {what}: per block ===" in stdout
        assert stdout.count(f"  {block} ") == 2  # one forward row, one backward row


@pytest.mark.slow
def test_compiled_side_tiny(tmp_path):
    """--compile adds DownscalerNet under model.compile (inductor) as side hpcds-c: its first
    calls (the compile) are reported apart from the medians (~1 min, mostly compiling)."""
    stdout, record = _run(tmp_path, "--sides", "hpcds", "--checkpoint", "off", "--no-infer",
                          "--compile", timeout=600)
    by_side = {r["side"]: r for r in record["rows"]}
    eager, compiled = by_side["hpcds"], by_side["hpcds-c"]
    assert compiled["compile_fwd_s"] > 0 and compiled["compile_bwd_s"] > 0
    assert "compile_fwd_s" not in eager
    assert compiled["fwd_s"] > 0 and compiled["fwd_bwd_s"] > 0
    # counted on the same eager reference twin: the same FLOPs
    assert compiled["flops"] == eager["flops"]
    assert "first calls (trace + compile + one pass)" in stdout
