"""Sampling with a checkpoint trained under data.log_transform: members are
f⁻¹(residual + f(interp(x_LR))) with the checkpoint's own f. Checked exactly by replacing the
sampler's output with the truth's normalised target: the store must then hold the HR truth."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from hpcds.config.load import load_config
from hpcds.data.paired import PairedDataset
from hpcds.data.store import open_store
from hpcds.ensemble.model import load_sampling_model
from hpcds.ensemble.output import EnsembleStore

gen = importlib.import_module("hpcds.ensemble.generate")  # the package exports a function so named
N_DATES = 3
EPS = 1e-5  # the tiny benchmark's tp reaches ~1e-4 m
MODEL = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
         "model.noise_embedding_dim=16", "model.window=16", f"data.log_transform={{tp: {EPS}}}"]


def config(run_dir, *extra):
    return load_config("tiny", [f"run.out_dir={run_dir}", f"benchmark.n_dates={N_DATES}",
                                *MODEL, "sampling.steps=2", "sampling.members=2", *extra])


@pytest.mark.parametrize("sampling_transform", ["same", "none"])
def test_members_are_the_inverse_transform_of_the_residual(run_dir, monkeypatch,
                                                           sampling_transform):
    """The truth's target in, the truth out (float32 targets: 1e-5 relative); the transform
    comes from the checkpoint whatever the sampling config says."""
    extra = [] if sampling_transform == "same" else ["data.log_transform.tp=0"]
    cfg = config(run_dir, *extra, f"sampling.output={run_dir}/truth_{sampling_transform}.zarr")
    model = load_sampling_model(cfg, PairedDataset.from_config(config(run_dir)).hr_grid)
    tp = cfg.data.variables.index("tp")
    assert model.normalisation.log_offset[tp] == EPS
    ds = PairedDataset.from_config(config(run_dir))
    ds.normalisation = model.normalisation
    targets = {gen.date_seed(cfg.sampling.seed, d): ds[i]["target"].T for i, d in
               enumerate(ds.dates)}  # (N, V) float32 per date

    def truth_target(model, cfg, sigmas, cond, forcings, seed, keys, node_index):
        return np.repeat(targets[seed][None].astype(np.float64), len(keys), axis=0)

    monkeypatch.setattr(gen, "sample_batch", truth_target)
    gen.generate(cfg, progress=False)
    got = EnsembleStore.open(cfg.sampling.output).read()  # (time, variable, member, cell)
    truth = open_store(cfg.data.hr_store).read(slice(None), cfg.data.variables)[:, :, 0]
    assert (truth[:, tp] > 10 * EPS).any()  # rain well above ε: a multiplicative check
    for m in range(got.shape[2]):
        np.testing.assert_allclose(got[:, :, m], truth, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[:, tp, m], truth[:, tp], rtol=1e-5, atol=1e-12)
