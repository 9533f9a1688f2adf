"""Shared fixtures: the tiny benchmark (10 dates) and a tiny model, built once per session."""

import pytest

from hpcds.cli.main import main
from hpcds.config.load import load_config

TINY_MODEL = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1"]
DATA = ["benchmark.n_dates=10", "training.val_dates=2"]


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-bench")
    assert main(["data", "benchmark", "tiny", f"run.out_dir={out}", *DATA, "--quiet"]) == 0
    return out


@pytest.fixture
def overrides(bench_dir, tmp_path):
    """Overrides for a tiny run in its own run_dir (graphs cached beside the benchmark)."""
    return [f"run.out_dir={bench_dir}", *DATA, *TINY_MODEL,
            f"training.run_dir={tmp_path / 'run'}", "training.warmup_steps=2",
            "training.log_every=1", "training.val_every=0", "training.checkpoint_every=0"]


@pytest.fixture
def make_cfg(overrides):
    def make(*extra):
        return load_config("tiny", [*overrides, *extra])
    return make
