"""DeepSpeed's bf16 path on CPU, through the real CLI (tests/train/deepspeed_probe.py turns on
what the trainer turns on only on CUDA: bf16 in DeepSpeed's config, which casts the module's
parameters to bf16, and bf16 autocast): 2 replicas, ZeRO-1 (configs/4km.yaml's stage), 3
steps, a checkpoint after each.

  * The checkpoint's `model` and EMA are float32: the float32 master weights from DeepSpeed's
    optimizer, not the module's bf16 copies, and the EMA follows e ← e + (1 − d)(m − e) from
    those masters (a bf16 average loses any update below bf16's resolution: at d = 0.999
    nearly all of them).
  * DeepSpeedStepper.step() hands the gradient norm back as a tensor without reading it on
    the host: the trainer reads it only on log steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpcds.checkpoint import load_checkpoint, step_name
from hpcds.train.ema import ema_decay_at
from hpcds.train.metrics import read_metrics

ROOT = Path(__file__).parents[2]
DECAY = 0.5
ARGS = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
        "benchmark.n_dates=10", "training.val_dates=2", "training.steps=3",
        "training.lr=1e-3", "training.warmup_steps=1", "training.grad_clip=1.0",
        f"training.ema_decay={DECAY}", "training.batch_size=1", "training.val_every=0",
        "training.checkpoint_every=1", "training.log_every=1",
        "parallel.use_deepspeed=true", "parallel.zero_stage=1"]


@pytest.fixture(scope="module")
def probe(bench_dir, tmp_path_factory):
    """(run_dir, [records of rank 0, records of rank 1]) of one 2-rank bf16 run."""
    run = tmp_path_factory.mktemp("bf16") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests/train/deepspeed_probe.py"), str(run.parent / "record"), "tiny",
           f"run.out_dir={bench_dir}", f"training.run_dir={run}", *ARGS, "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env, cwd=ROOT)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    records = [json.loads((run.parent / f"record.{r}.json").read_text()) for r in (0, 1)]
    return run, records


def test_bf16_checkpoints_hold_float32_masters_and_their_ema(probe):
    run, _ = probe
    states = [load_checkpoint(run / step_name(k), resume=False) for k in (1, 2, 3)]
    for s in states:
        for key, tensors in (("model", s["model"]), ("ema", s["ema"]["module"])):
            dtypes = {v.dtype for v in tensors.values() if v.is_floating_point()}
            assert dtypes == {torch.float32}, (s["step"], key, dtypes)
    # the masters, not bf16 copies widened: most of their values are not bf16 numbers
    weights = [v for v in states[-1]["model"].values() if v.is_floating_point()]
    off_grid = sum(int((v != v.bfloat16().float()).sum()) for v in weights)
    assert off_grid > 0.5 * sum(v.numel() for v in weights)
    # step k → k + 1 is EMA update number k: e ← lerp(e, m, 1 − d_k), m the step's masters
    for before, after in zip(states, states[1:]):
        w = 1.0 - ema_decay_at(before["step"], DECAY)
        for name, e in after["ema"]["module"].items():
            want = torch.lerp(before["ema"]["module"][name], after["model"][name], w) \
                if e.is_floating_point() else after["model"][name]
            torch.testing.assert_close(e, want, rtol=1e-6, atol=1e-7, msg=name)


def test_deepspeed_step_returns_the_grad_norm_without_a_host_read(probe):
    run, records = probe
    for rank in records:
        assert len(rank) == 3
        assert all(r["type"] == "Tensor" and r["host_reads"] == [] for r in rank), rank
    assert records[0] == records[1]  # one global norm
    logged = [r["grad_norm"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert logged == pytest.approx([r["norm"] for r in records[0]], rel=1e-6)
