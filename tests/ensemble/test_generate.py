"""`hpcds sample` end to end with a real (tiny, briefly trained) checkpoint: a valid store,
exact resumption after a crash, members independent of the batching, LR ensembles,
the deterministic mode and the command line."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import xarray as xr
from omegaconf import OmegaConf

from hpcds.checkpoint import load_checkpoint, save_checkpoint
from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.store import create_store, open_store
from hpcds.diffusion.noise import batch_noise
from hpcds.ensemble.generate import date_seed, generate, member_keys
from hpcds.ensemble.model import load_sampling_model
from hpcds.ensemble.output import EnsembleStore
from hpcds.errors import CheckpointError
from hpcds.grids import make_grid

N_DATES = 3
MODEL = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
               "model.noise_embedding_dim=16", "model.window=16"]
SAMPLING = ["sampling.solver=heun", "sampling.steps=3", "sampling.members=3",
            "sampling.S_churn=2.0", "sampling.S_min=0.01", "sampling.S_max=50"]




def config(run_dir, *extra):
    return load_config("tiny", [f"run.out_dir={run_dir}", f"benchmark.n_dates={N_DATES}",
                                *MODEL, *SAMPLING, *extra])


def read_all(path) -> np.ndarray:
    return EnsembleStore.open(path).read()


@pytest.fixture(scope="module")
def reference(run_dir):
    """An uninterrupted run with members_per_batch=2 (batches {0, 1}, {2})."""
    cfg = config(run_dir, "sampling.members_per_batch=2",
                 f"sampling.output={run_dir}/reference.zarr")
    result = generate(cfg, progress=False)
    assert result.written == N_DATES * 3 and result.skipped == 0
    return cfg, read_all(cfg.sampling.output)


def test_writes_a_valid_store(run_dir, reference):
    cfg, values = reference
    assert values.shape == (N_DATES, 5, 3, make_grid(cfg.grid.hr).size)
    assert np.isfinite(values).all()
    store = EnsembleStore.open(cfg.sampling.output)
    assert store.complete()
    # HR = interp(LR) + de-normalised residual: the ensemble mean is close to the truth's
    # large scales, and the members differ (a diffusion ensemble, not copies)
    hr = open_store(cfg.data.hr_store).read(slice(None), cfg.data.variables)[:, :, 0]
    err = np.abs(values.mean(axis=2) - hr).mean(axis=(0, 2))
    assert (err < 4 * hr.std(axis=(0, 2))).all()
    assert (values.std(axis=2).mean(axis=(0, 2)) > 0).all()
    ds = xr.open_zarr(cfg.sampling.output)
    assert ds["data"].dims == ("time", "variable", "ensemble", "cell")
    np.testing.assert_array_equal(ds["dates"].values, open_store(cfg.data.hr_store).dates)
    assert ds.attrs["variables_metadata"]["msl"]["standard_name"] == \
        "air_pressure_at_mean_sea_level"
    prov = ds.attrs["provenance"]
    ckpt = run_dir / "train" / "latest.pt"
    assert prov["checkpoint"] == str(ckpt.resolve())
    assert len(prov["checkpoint_sha256"]) == 64
    assert prov["weights"] == "ema" and prov["solver"] == "heun" and prov["steps"] == 3
    assert prov["seed"] == 0 and prov["hpcds_version"] and prov["created"]
    assert "sampling:" in ds.attrs["hpcds_config"]


def test_same_config_same_output(run_dir, reference):
    cfg, values = reference
    again = config(run_dir, "sampling.members_per_batch=2", f"sampling.output={run_dir}/b.zarr")
    generate(again, progress=False)
    np.testing.assert_array_equal(read_all(again.sampling.output), values)


def test_nonnegative_variables_are_clipped_at_zero(run_dir, reference):
    cfg, got = reference  # the tiny preset: data.nonnegative = [tp]
    raw = config(run_dir, "sampling.members_per_batch=2", "data.nonnegative=[]",
                 f"sampling.output={run_dir}/unclipped.zarr")
    generate(raw, progress=False)
    values = read_all(raw.sampling.output)  # (time, variable, member, cell)
    tp = list(cfg.data.variables).index("tp")
    assert cfg.data.nonnegative == ["tp"] and (values[:, tp] < 0).any()  # it undershoots
    want = values.copy()
    want[:, tp] = np.maximum(values[:, tp], 0)
    np.testing.assert_array_equal(got, want)
    # names that are not among data.variables are ignored
    assert config(run_dir, "data.variables=[2t]").data.nonnegative == ["tp"]


def test_date_range_restricts_without_changing_members(run_dir, reference):
    _, values = reference
    dates = open_store(reference[0].data.hr_store).dates
    cfg = config(run_dir, "sampling.members_per_batch=2", f"data.start_date={dates[1]}",
                 f"sampling.output={run_dir}/range.zarr")
    generate(cfg, progress=False)
    store = EnsembleStore.open(cfg.sampling.output)
    np.testing.assert_array_equal(store.dates, dates[1:])
    # noise is keyed by date, not by position: the same members as in the full run
    np.testing.assert_array_equal(store.read(), values[1:])


def test_killed_run_resumes_to_exactly_the_same_store(run_dir, reference, monkeypatch):
    _, values = reference
    cfg = config(run_dir, "sampling.members_per_batch=2", f"sampling.output={run_dir}/k.zarr")
    writes = []

    def crash_after_three(t, members):
        writes.append((t, tuple(members)))
        if len(writes) == 3:
            raise KeyboardInterrupt  # as if killed after three batches

    with pytest.raises(KeyboardInterrupt):
        generate(cfg, progress=False, on_write=crash_after_three)
    assert EnsembleStore.open(cfg.sampling.output).done().sum() == 2 + 1 + 2
    # a crash between a batch's data and its done flags: that batch is redone
    real_mark_done = EnsembleStore.mark_done
    calls = []

    def mark_done_then_die(self, t, members):
        calls.append(t)
        if len(calls) == 2:
            raise RuntimeError("killed between write and flag")
        real_mark_done(self, t, members)

    monkeypatch.setattr(EnsembleStore, "mark_done", mark_done_then_die)
    with pytest.raises(RuntimeError, match="between"):
        generate(cfg, progress=False)
    monkeypatch.setattr(EnsembleStore, "mark_done", real_mark_done)
    result = generate(cfg, progress=False)
    assert result.skipped == 2 + 1 + 2 + 1 and result.written == N_DATES * 3 - result.skipped
    np.testing.assert_array_equal(read_all(cfg.sampling.output), values)


def test_overwrite_keeps_the_old_store_until_the_new_one_is_complete(run_dir, reference):
    """--overwrite of a finished store that stops part-way leaves the old ensemble as it was
    (data and identity) and the partial replacement beside it; a complete --overwrite
    replaces the old store and leaves nothing beside it."""
    _, values = reference
    out = run_dir / "ow.zarr"
    old_cfg = config(run_dir, "sampling.members_per_batch=2", f"sampling.output={out}")
    generate(old_cfg, progress=False)
    old = read_all(out)
    np.testing.assert_array_equal(old, values)
    new_cfg = config(run_dir, "sampling.members_per_batch=2", f"sampling.output={out}",
                     "sampling.seed=7")
    writes = []

    def crash_after_two(t, members):
        writes.append(t)
        if len(writes) == 2:
            raise KeyboardInterrupt  # killed half-way through the replacement

    with pytest.raises(KeyboardInterrupt):
        generate(new_cfg, overwrite=True, progress=False, on_write=crash_after_two)
    np.testing.assert_array_equal(read_all(out), old)
    assert EnsembleStore.open(out).identity["seed"] == 0 and EnsembleStore.open(out).complete()
    partial = run_dir / "ow.zarr.replacing"
    assert EnsembleStore.open(partial).done().sum() == 2 + 1
    result = generate(new_cfg, overwrite=True, progress=False)
    assert result.path == out and result.written == N_DATES * 3 and result.skipped == 0
    assert not partial.exists()
    new = EnsembleStore.open(out)
    assert new.identity["seed"] == 7 and new.complete()
    assert not np.array_equal(new.read(), old)  # another seed: other members


def test_members_do_not_depend_on_members_per_batch(run_dir, reference):
    _, values = reference
    by_batch = {}
    for b in (1, 3):
        cfg = config(run_dir, f"sampling.members_per_batch={b}",
                     f"sampling.output={run_dir}/mpb{b}.zarr")
        generate(cfg, progress=False)
        by_batch[b] = read_all(cfg.sampling.output)
    # the noise is keyed per member, so it is bitwise independent of the batching ...
    nodes = np.arange(50)
    seed = date_seed(0, np.datetime64("2026-01-01T06"))
    together = batch_noise(seed, member_keys(np.arange(3), 3), 1, nodes, 5)
    for m in range(3):
        np.testing.assert_array_equal(
            batch_noise(seed, member_keys([m], 3), 1, nodes, 5)[0], together[m])
    # ... and the members agree to the float32 round-off of batched GEMMs (see generate.py)
    scale = values.std(axis=(0, 2, 3))[None, :, None, None]
    for b, other in by_batch.items():
        print(f"members_per_batch {b} vs 2: max |diff| / std = "
              f"{np.abs(other - values).__truediv__(scale).max():.2e}")
        np.testing.assert_allclose(other / scale, values / scale, rtol=0, atol=1e-5)


def test_lr_ensemble_gives_members_per_lr_member(run_dir, reference):
    cfg0, values = reference
    lr = open_store(cfg0.data.lr_store)
    x = lr.read(slice(None))  # (time, variable, 1, cell)
    shifted = x.copy()
    shifted[:, lr.variables.index("2t")] += 3.0  # LR member 1: 3 K warmer
    path = run_dir / "data" / "lr_k2.zarr"
    grid = make_grid(cfg0.grid.lr)
    with create_store(path, grid=grid, variables=lr.variables, dates=lr.dates,
                      frequency=lr.frequency, units=lr.units, ensemble=2,
                      chunk_cells=4096) as writer:
        for t in range(len(lr.dates)):
            writer.write(t, np.concatenate([x[t], shifted[t]], axis=1))
    cfg = config(run_dir, f"data.lr_store={path}", "sampling.members_per_batch=3",
                 f"sampling.output={run_dir}/k2.zarr")
    result = generate(cfg, progress=False)
    assert result.written == N_DATES * 2 * 3
    out = read_all(cfg.sampling.output)
    assert out.shape[2] == 2 * 3
    ds = xr.open_zarr(cfg.sampling.output)
    np.testing.assert_array_equal(ds["lr_member"].values, [0, 0, 0, 1, 1, 1])
    assert ds.attrs["lr_members"] == 2 and ds.attrs["members_per_lr_member"] == 3
    # LR member 0 is the original store: its members are the K=1 run's (to GEMM round-off)
    scale = values.std(axis=(0, 2, 3))[None, :, None, None]
    np.testing.assert_allclose(out[:, :, :3] / scale, values / scale, rtol=0, atol=1e-5)
    # LR member 1 is 3 K warmer: so are its HR members, on average
    t2 = cfg.data.variables.index("2t")
    warming = out[:, t2, 3:].mean() - out[:, t2, :3].mean()
    assert 2.0 < warming < 4.0


def test_dpmpp_2m_and_deterministic_checkpoint(run_dir):
    cfg = config(run_dir, "sampling.solver=dpmpp_2m", "sampling.members=2",
                 f"sampling.output={run_dir}/dpm.zarr")
    generate(cfg, progress=False)
    out = read_all(cfg.sampling.output)
    assert np.isfinite(out).all() and (out[:, :, 0] != out[:, :, 1]).any()

    # the same network as a regression checkpoint (diffusion.deterministic in its config)
    state = load_checkpoint(run_dir / "train" / "latest.pt", resume=False)
    train_cfg = OmegaConf.create(state["config"])
    train_cfg.diffusion.deterministic = True
    state["config"] = OmegaConf.to_yaml(train_cfg)
    state = {k: v for k, v in state.items() if k not in ("format", "version")}
    save_checkpoint(run_dir / "regression", state)
    cfg = config(run_dir, f"sampling.checkpoint={run_dir}/regression/latest.pt",
                 f"sampling.output={run_dir}/det.zarr", "sampling.members_per_batch=2")
    result = generate(cfg, progress=False)
    assert result.written == N_DATES * 3
    out = read_all(cfg.sampling.output)
    for m in (1, 2):  # the conditional mean, written to every member
        np.testing.assert_array_equal(out[:, :, m], out[:, :, 0])
    model = load_sampling_model(cfg, make_grid(cfg.grid.hr))
    assert model.deterministic and model.weights == "ema"


def test_checkpoint_errors(run_dir):
    cfg = config(run_dir, "data.variables=[2t,tp]")
    with pytest.raises(CheckpointError, match=r"data.variables=\[2t,10u,10v,msl,tp\]"):
        load_sampling_model(cfg, make_grid(cfg.grid.hr))
    cfg = config(run_dir, "training.run_dir=/nonexistent/train")
    with pytest.raises(CheckpointError, match="hpcds train"):
        load_sampling_model(cfg, make_grid(cfg.grid.hr))
    # no normalisation in the checkpoint: statistics.json beside it, else an error
    state = load_checkpoint(run_dir / "train" / "latest.pt", resume=False)
    state = {k: v for k, v in state.items() if k not in ("format", "version", "normalisation")}
    save_checkpoint(run_dir / "bare", state)
    cfg = config(run_dir, f"sampling.checkpoint={run_dir}/bare/latest.pt")
    with pytest.raises(CheckpointError, match="statistics.json"):
        load_sampling_model(cfg, make_grid(cfg.grid.hr))
    stats = (run_dir / "train" / "statistics.json").read_text()
    (run_dir / "bare" / "statistics.json").write_text(stats)
    with_file = load_sampling_model(cfg, make_grid(cfg.grid.hr)).normalisation
    ref = load_sampling_model(config(run_dir), make_grid(cfg.grid.hr)).normalisation
    np.testing.assert_array_equal(with_file.residual_std, ref.residual_std)


def test_cli_sample(run_dir, reference, capsys):
    _, values = reference
    args = ["sample", "tiny", f"run.out_dir={run_dir}", f"benchmark.n_dates={N_DATES}",
            *MODEL, *SAMPLING, "sampling.members_per_batch=2",
            f"sampling.output={run_dir}/cli.zarr", "--quiet"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "samples/s" in first and f"{N_DATES} dates x 3 members" in first
    np.testing.assert_array_equal(read_all(run_dir / "cli.zarr"), values)
    assert (run_dir / "cli.zarr.config.yaml").is_file()
    assert main(args) == 0  # a finished store: everything skipped
    assert f"{N_DATES * 3} of {N_DATES * 3}" in capsys.readouterr().out
    assert main([*args, "--members", "2"]) == 2  # another layout: refused, with the fix
    err = capsys.readouterr().err
    assert "members per LR member 3 there, 2 now" in err and "--overwrite" in err
    assert main([*args, "--members", "2", "--overwrite",
                 "--checkpoint", str(run_dir / "train" / "latest.pt")]) == 0
    assert read_all(run_dir / "cli.zarr").shape[2] == 2
    assert main([*args, "--checkpoint", str(run_dir / "missing.pt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_cli_sample_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--checkpoint", "--members", "--overwrite", "sampling.members"):
        assert option in text


def test_checkpoint_config_older_than_a_key_gets_its_legacy_value(tmp_path):
    """A saved config without model.refiner_layers predates the refiner: its model had none,
    so it is rebuilt with 0 (not today's default); a config that has the key keeps it."""
    from hpcds.checkpoint import config_from_yaml
    from hpcds.config.load import to_yaml

    cfg = load_config("tiny")
    assert cfg.model.refiner_layers >= 1
    saved = OmegaConf.create(to_yaml(cfg))
    assert config_from_yaml(OmegaConf.to_yaml(saved), tmp_path).model.refiner_layers == \
        cfg.model.refiner_layers
    del saved.model["refiner_layers"]
    old = config_from_yaml(OmegaConf.to_yaml(saved), tmp_path)
    assert old.model.refiner_layers == 0
    assert old.model.hidden_dim == cfg.model.hidden_dim


def test_sampling_ranges_sampler_steps_then_write(run_dir, nvtx_ranges):
    """NVTX: per batch of members, one "sampler_step" per solver step holding the network's
    ranges of its denoiser calls (Heun: 2 per step, 1 on the last), then one "write"."""
    cfg = config(run_dir, "sampling.members=2", "sampling.members_per_batch=2",
                 f"sampling.output={run_dir}/nvtx.zarr")
    generate(cfg, progress=False)
    tree = nvtx_ranges.trees()[threading.get_ident()]
    names = nvtx_ranges.names
    steps = cfg.sampling.steps
    assert names(tree) == (["sampler_step"] * steps + ["write"]) * N_DATES
    network = ["encoder", "processor", "decoder", "refiner"]
    for i, (name, children) in enumerate(tree):
        if name == "write":
            assert children == []
        else:
            evals = 1 if i % (steps + 1) == steps - 1 else 2
            assert names(children) == network * evals
            assert all(grand == [] for _, grand in children)  # one process: no halos


def test_compile_is_a_sampling_choice(run_dir):
    """model.compile comes from the sampling config (like model.backend), not the
    checkpoint's: the loaded network is compiled (lazily: nothing runs here) or not."""
    grid = make_grid(config(run_dir).grid.hr)
    eager = load_sampling_model(config(run_dir), grid).precond.backbone
    compiled = load_sampling_model(config(run_dir, "model.compile=true"), grid).precond.backbone
    assert eager._compiled_call_impl is None and compiled._compiled_call_impl is not None
