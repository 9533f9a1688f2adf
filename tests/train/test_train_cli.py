"""`hpcds train`: help, a run that writes its files, fine-tuning from another run."""

import json

import pytest
import yaml

from hpcds.checkpoint import LATEST, load_checkpoint
from hpcds.cli.main import main
from hpcds.train.metrics import read_metrics


def test_train_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: hpcds train" in out and "metrics.jsonl" in out and "latest.pt" in out


def test_cli_run_writes_config_metrics_and_checkpoints(overrides, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "tiny", *overrides, "training.steps=4", "training.val_every=2",
                 "training.checkpoint_every=2", "training.log_every=2"])
    assert code == 0
    captured = capsys.readouterr()
    assert "training:" in captured.err  # the resolved config, printed at start
    # no terminal here, so no bar: the progress as one line per log interval instead
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("train: step")]
    assert [ln.split()[2] for ln in lines] == ["2/4", "4/4"]
    assert all("loss" in ln and "steps/s" in ln and "ETA" in ln for ln in lines)
    out = captured.out
    assert f"run dir: {run_dir}" in out
    for text in ("steps: 4", "train loss:", "val loss:", "steps/s", "samples/s"):
        assert text in out

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["steps"] == 4 and saved["model"]["hidden_dim"] == 16
    train_lines = read_metrics(run_dir / "metrics.jsonl", "train")
    assert [r["step"] for r in train_lines] == [2, 4]
    assert {"loss", "lr", "grad_norm", "steps_per_s", "samples_per_s"} <= set(train_lines[0])
    val_lines = read_metrics(run_dir / "metrics.jsonl", "val")
    assert [r["step"] for r in val_lines] == [0, 2, 4]
    assert set(val_lines[-1]["loss_by_sigma"]) == {"ln_sigma<-2", "-2<=ln_sigma<0",
                                                   "0<=ln_sigma<2", "ln_sigma>=2"}
    assert sum(val_lines[-1]["count_by_sigma"].values()) == 2 * 4  # 2 dates × 4 draws
    assert load_checkpoint(run_dir / LATEST)["step"] == 4
    assert (run_dir / "step-0000002.pt").is_file() and (run_dir / "step-0000004.pt").is_file()
    stats = json.loads((run_dir / "statistics.json").read_text())
    assert stats["n_dates"] == 8  # the training dates only

    # a finished run is not trained further: it resumes at its last step and stops
    assert main(["train", "tiny", *overrides, "training.steps=4", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "resumed from step 4" in captured.out and "train: step" not in captured.err

    # fine-tune from it in a new run_dir: weights carried over, optimizer and step fresh
    tuned = tmp_path / "tuned"
    # (another seed: a run that ignored init_from would start from different weights)
    code = main(["train", "tiny", *overrides, "training.steps=2", "run.seed=7",
                 f"training.run_dir={tuned}", f"training.init_from={run_dir / LATEST}",
                 "diffusion.regime=karras_uniform", "diffusion.sigma_max=1e5", "--quiet"])
    assert code == 0
    ckpt = load_checkpoint(tuned / LATEST)
    assert ckpt["step"] == 2 and ckpt["scheduler"] == {"step": 2}
    assert "karras_uniform" in ckpt["config"]
    # the weights are the source's moved by 2 AdamW steps: each step moves a weight by at
    # most ~lr (|m̂/√v̂| ≤ 1 at the first steps) plus the decay; fresh weights differ by ~0.1
    source = load_checkpoint(run_dir / LATEST)["model"]
    lr = yaml.safe_load((tuned / "config.yaml").read_text())["training"]["lr"]
    moved = max(float((ckpt["model"][k] - w).abs().max()) for k, w in source.items())
    assert moved <= 2.5 * lr, f"fine-tuned weights {moved} away from the source's"


def test_bad_training_value_is_a_user_error(overrides, capsys):
    assert main(["train", "tiny", *overrides, "training.grad_accumulation=0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("hpcds: error: bad value 0 for config key 'training.grad_accumulation': "
                   "expected an integer >= 1")
