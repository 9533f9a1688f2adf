"""Acceptance: 3 steps + a restart in a fresh process + 3 steps is the same run as 6 steps
straight — identical per-step losses, validation losses and final weights (CPU, bitwise)."""

import subprocess
import sys

import torch

from hpcds.checkpoint import LATEST, load_checkpoint
from hpcds.config.load import load_config
from hpcds.train import train
from hpcds.train.metrics import read_metrics

RUN = ["training.steps=6", "training.val_every=3", "training.checkpoint_every=2",
       "training.batch_size=2", "training.ema_decay=0.9"]


def losses(run_dir, kind="train"):
    return [(r["step"], r["loss"]) for r in read_metrics(f"{run_dir}/metrics.jsonl", kind)]


def test_resume_continues_the_same_run(overrides, tmp_path):
    straight = load_config("tiny", [*overrides, *RUN, f"training.run_dir={tmp_path / 'a'}"])
    summary = train(straight, progress=False)
    assert summary["step"] == 6 and summary["resumed_from"] is None

    split = [*overrides, *RUN, f"training.run_dir={tmp_path / 'b'}"]
    first = train(load_config("tiny", split), progress=False, stop_at=3)
    assert first["step"] == 3
    assert load_checkpoint(tmp_path / "b" / LATEST)["step"] == 3  # the stop writes one
    # the second half in a new process: nothing is shared but the run directory
    run = subprocess.run([sys.executable, "-m", "hpcds.cli.main", "train", "tiny", *split,
                          "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "resumed from step 3" in run.stdout

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [s for s, _ in a] == [1, 2, 3, 4, 5, 6]
    assert a == b  # exact float equality, step by step
    assert losses(tmp_path / "a", "val") == losses(tmp_path / "b", "val")

    ca, cb = (load_checkpoint(tmp_path / d / LATEST) for d in "ab")
    assert ca["step"] == cb["step"] == 6
    for key in ("model",):
        for name, tensor in ca[key].items():
            assert torch.equal(tensor, cb[key][name]), name
    for name, tensor in ca["ema"]["module"].items():
        assert torch.equal(tensor, cb["ema"]["module"][name]), name
    for (i, sa), (_, sb) in zip(ca["optimizer"]["state"].items(),
                                cb["optimizer"]["state"].items()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa), i
    assert ca["data"]["epoch"] == cb["data"]["epoch"] and ca["data"]["index"] == cb["data"]["index"]
    assert torch.equal(ca["rng"]["generators"]["noise"], cb["rng"]["generators"]["noise"])


def test_resuming_past_training_steps_warns_and_keeps_the_model(overrides, tmp_path, caplog):
    """A finished run re-run with fewer training.steps trains nothing: it says so."""
    run = [*overrides, *RUN, f"training.run_dir={tmp_path / 'c'}"]
    train(load_config("tiny", [*run, "training.steps=2"]), progress=False)
    before = load_checkpoint(tmp_path / "c" / LATEST)["model"]
    with caplog.at_level("WARNING", logger="hpcds.train.trainer"):
        summary = train(load_config("tiny", [*run, "training.steps=1"]), progress=False)
    assert summary["steps_run"] == 0 and summary["resumed_from"] == 2
    assert "is at step 2, training.steps is 1: nothing to train" in caplog.text
    after = load_checkpoint(tmp_path / "c" / LATEST)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
