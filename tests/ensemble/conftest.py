"""A benchmark and a checkpoint of a few real training steps, shared by the ensemble tests.

Each test module names its sizes in module constants N_DATES and MODEL (model overrides);
modules that agree share one run for the whole session (built once, in a temporary dir).
Tests write their outputs under new names in the run dir and never change its stores or
checkpoint."""

from __future__ import annotations

import pytest

from hpcds.cli.main import main

_RUNS: dict[tuple, object] = {}


@pytest.fixture(scope="module")
def run_dir(request, tmp_path_factory):
    n_dates, model = int(request.module.N_DATES), tuple(request.module.MODEL)
    key = (n_dates, model)
    if key not in _RUNS:
        out = tmp_path_factory.mktemp("ens")
        common = [f"run.out_dir={out}", f"benchmark.n_dates={n_dates}", *model, "--quiet"]
        assert main(["data", "benchmark", "tiny", *common]) == 0
        assert main(["train", "tiny", *common, "training.steps=3", "training.val_dates=1",
                     "training.warmup_steps=1", "training.val_every=100",
                     "training.checkpoint_every=100"]) == 0
        _RUNS[key] = out
    return _RUNS[key]
