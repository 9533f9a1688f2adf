"""PairedDataset: per-shard samples equal slices of the whole, statistics merge exactly,
normalisation matches float64 references computed independently from the stores."""

import json

import numpy as np
import pytest

from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.paired import PairedDataset
from hpcds.data.stats import RunningStats
from hpcds.data.store import open_store
from hpcds.grids import interpolation_matrix, make_grid, shard_ranges

N_DATES = 6


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    out = tmp_path_factory.mktemp("paired")
    overrides = [f"run.out_dir={out}", f"benchmark.n_dates={N_DATES}"]
    assert main(["data", "benchmark", "tiny", *overrides, "--quiet"]) == 0
    return load_config("tiny", overrides)


def test_residual_is_hr_minus_interpolated_lr(cfg):
    untransformed = load_config("tiny", [f"run.out_dir={cfg.run.out_dir}",
                                         f"benchmark.n_dates={N_DATES}",
                                         "data.log_transform.tp=0"])  # the preset logs tp
    ds = PairedDataset.from_config(untransformed)
    lr, hr = open_store(cfg.data.lr_store), open_store(cfg.data.hr_store)
    lr_grid, hr_grid = make_grid(cfg.grid.lr), make_grid(cfg.grid.hr)
    interp = interpolation_matrix(lr_grid, hr_grid)
    # hpcds stores are in SFC order: store cell i is grid cell i
    x_lr = lr.read(2, cfg.data.variables)[0, :, 0].astype(np.float64)
    x_hr = hr.read(2, cfg.data.variables)[0, :, 0].astype(np.float64)
    expected = x_hr - (interp @ x_lr.T).T
    np.testing.assert_allclose(ds.residual(2), expected, rtol=0, atol=1e-9)


def test_shards_read_only_their_cells_and_match_the_whole(cfg):
    whole = PairedDataset.from_config(cfg)
    whole.set_normalisation(whole.residual_statistics())
    full = whole[3]
    for start, stop in shard_ranges(whole.hr_grid.size, 3):  # uneven: 5145 = 1715 · 3
        part = PairedDataset.from_config(cfg, hr_cells=(start, stop))
        assert len(part.lr_needed) < whole.lr_grid.size  # only the LR cells its rows touch
        part.normalisation = whole.normalisation
        sample = part[3]
        for key in ("cond", "target", "forcings"):
            np.testing.assert_allclose(sample[key], full[key][:, start:stop], rtol=1e-6,
                                       atol=1e-6)


def test_shard_statistics_merge_to_the_whole(cfg):
    whole = PairedDataset.from_config(cfg).residual_statistics()
    merged = RunningStats(cfg.data.variables)
    for cells in shard_ranges(make_grid(cfg.grid.hr).size, 4):
        merged.merge(PairedDataset.from_config(cfg, hr_cells=cells).residual_statistics())
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(merged.stdev, whole.stdev, rtol=1e-10)


def test_residual_statistics_match_float64_reference(cfg):
    ds = PairedDataset.from_config(cfg)
    weights = ds.hr_grid.area_weights
    residuals = np.stack([ds.residual(i) for i in range(len(ds))])  # (t, v, c)
    w = np.broadcast_to(weights, residuals.shape)
    mean = (residuals * w).sum(axis=(0, 2)) / w.sum(axis=(0, 2))
    var = (((residuals - mean[None, :, None]) ** 2) * w).sum(axis=(0, 2)) / w.sum(axis=(0, 2))
    stats = ds.residual_statistics()
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.stdev, np.sqrt(var), rtol=1e-9)


def test_normalised_sample_has_unit_scale(cfg):
    ds = PairedDataset.from_config(cfg)
    ds.set_normalisation(ds.residual_statistics())
    target = np.stack([ds[i]["target"] for i in range(len(ds))])
    assert target.dtype == np.float32
    np.testing.assert_allclose(target.mean(axis=(0, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(target.std(axis=(0, 2)), 1.0, atol=0.1)


def test_stats_command_writes_statistics(cfg, capsys):
    assert main(["data", "stats", "tiny", f"run.out_dir={cfg.run.out_dir}",
                 f"benchmark.n_dates={N_DATES}", "--quiet"]) == 0
    saved = json.loads(open(cfg.data.stats_file).read())
    assert saved["variables"] == cfg.data.variables and saved["n_dates"] == N_DATES
    ds = PairedDataset.from_config(cfg)
    stats = ds.residual_statistics()
    np.testing.assert_allclose(saved["residual_std"], stats.stdev, rtol=1e-12)
    assert "statistics over 6 dates" in capsys.readouterr().out


def test_native_order_store_reads_like_the_sfc_store(cfg, tmp_path):
    """A store written by another tool keeps the grid's native order: the dataset reads it by
    index and sees exactly the same samples."""
    import shutil

    import zarr

    hr_grid = make_grid(cfg.grid.hr)
    native = tmp_path / "hr_native.zarr"
    shutil.copytree(cfg.data.hr_store, native)
    group = zarr.open_group(native, mode="r+")
    data = group["data"][...]
    group["data"][...] = hr_grid.to_native(data, axis=-1)
    group["latitudes"][...] = hr_grid.to_native(group["latitudes"][...])
    group["longitudes"][...] = hr_grid.to_native(group["longitudes"][...])
    group.attrs["cell_order"] = "native"
    zarr.consolidate_metadata(native)

    sfc = PairedDataset.from_config(cfg)
    other = load_config("tiny", [f"run.out_dir={cfg.run.out_dir}",
                                 f"benchmark.n_dates={N_DATES}", f"data.hr_store={native}"])
    assert open_store(native).cell_order == "native"
    start, stop = shard_ranges(hr_grid.size, 3)[1]
    part = PairedDataset.from_config(other, hr_cells=(start, stop))
    np.testing.assert_array_equal(part.read_hr(4), sfc.read_hr(4)[:, start:stop])


def test_log_transformed_residual_and_its_saved_statistics(cfg, tmp_path):
    """data.log_transform: the residual is log(x_HR + ε) − log(interp(x_LR) + ε) for tp (the
    identity for the others), and statistics saved without the transform are not reused."""
    from hpcds.train.data import prepare_normalisation, split_dates

    eps = 1e-4
    logged = load_config("tiny", [f"run.out_dir={cfg.run.out_dir}",
                                  f"benchmark.n_dates={N_DATES}",
                                  f"data.log_transform={{tp: {eps}}}"])
    plain = load_config("tiny", [f"run.out_dir={cfg.run.out_dir}",
                                 f"benchmark.n_dates={N_DATES}", "data.log_transform.tp=0"])
    ds, plain = PairedDataset.from_config(logged), PairedDataset.from_config(plain)
    tp = cfg.data.variables.index("tp")
    lr, hr = open_store(cfg.data.lr_store), open_store(cfg.data.hr_store)
    interp = interpolation_matrix(make_grid(cfg.grid.lr), make_grid(cfg.grid.hr))
    x_lr = lr.read(2, ["tp"])[0, 0, 0].astype(np.float64)
    x_hr = hr.read(2, ["tp"])[0, 0, 0].astype(np.float64)
    assert (x_hr > 0).mean() > 0.05  # it rains somewhere
    want = np.log(x_hr + eps) - np.log(interp @ x_lr + eps)
    np.testing.assert_allclose(ds.residual(2)[tp], want, rtol=1e-9, atol=1e-9)
    others = [v for v in range(len(cfg.data.variables)) if v != tp]
    np.testing.assert_array_equal(ds.residual(2)[others], plain.residual(2)[others])
    start, stop = shard_ranges(ds.hr_grid.size, 3)[2]  # a shard's residual is the slice
    part = PairedDataset.from_config(logged, hr_cells=(start, stop))
    np.testing.assert_allclose(part.residual(2), ds.residual(2)[:, start:stop], rtol=1e-12,
                               atol=1e-12)

    run_dir = tmp_path / "run"
    split = split_dates(plain, 1)
    prepare_normalisation(cfg, split, run_dir)  # writes run_dir/statistics.json, ε = 0
    norm, source = prepare_normalisation(logged, split_dates(ds, 1), run_dir)
    assert source == "computed" and norm.log_offset[tp] == eps
    again, source = prepare_normalisation(logged, split_dates(ds, 1), run_dir)
    assert source == "run_dir" and again.log_offset[tp] == eps
    np.testing.assert_array_equal(again.residual_std, norm.residual_std)
