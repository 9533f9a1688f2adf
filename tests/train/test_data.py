"""Training data: the date split, statistics from the training dates only (or a matching
stats file), tensors in (N, C) layout."""

import json

import numpy as np
import pytest
import torch

from hpcds.cli.main import main
from hpcds.data.paired import PairedDataset
from hpcds.errors import ConfigError
from hpcds.train.data import (STATS_NAME, TrainSamples, collate, prepare_normalisation,
                              split_dates)


def test_split_and_train_only_statistics(make_cfg, tmp_path):
    cfg = make_cfg()
    ds = PairedDataset.from_config(cfg)
    split = split_dates(ds, 2)
    assert len(split.train) == 8 and len(split.val) == 2
    assert list(split.val.dates) == list(ds.dates[-2:])
    assert split.train.dates[-1] < split.val.dates[0]

    norm, source = prepare_normalisation(cfg, split, tmp_path)
    assert source == "computed"
    train_only = PairedDataset.from_config(cfg)
    train_only.dates = ds.dates[:8]
    expected = train_only.residual_statistics()
    np.testing.assert_array_equal(norm.residual_mean, expected.mean)
    np.testing.assert_array_equal(norm.residual_std, expected.stdev)
    everything = ds.residual_statistics()
    assert not np.allclose(norm.residual_mean, everything.mean, rtol=0, atol=1e-12)
    saved = json.loads((tmp_path / STATS_NAME).read_text())
    assert saved["n_dates"] == 8 and saved["residual_mean"] == norm.residual_mean.tolist()
    assert split.val.normalisation is norm  # validation uses the training statistics

    again, source = prepare_normalisation(cfg, split_dates(ds, 2), tmp_path)
    assert source == "run_dir"
    np.testing.assert_array_equal(again.residual_std, norm.residual_std)
    # a different split does not match the saved file: recomputed
    _, source = prepare_normalisation(cfg, split_dates(PairedDataset.from_config(cfg), 3),
                                      tmp_path)
    assert source == "computed"

    with pytest.raises(ConfigError, match="training.val_dates"):
        split_dates(ds, 10)


def test_every_rank_chooses_before_the_statistics_file_is_written(make_cfg, tmp_path):
    """The barrier comes after the choice (merge included) and before the write: a rank that
    has not chosen yet cannot see a file written meanwhile (the 2 x 2 CI race)."""
    cfg = make_cfg()
    events = []

    def merge(stats):
        events.append("merge")
        return stats

    def barrier():
        events.append(("barrier", (tmp_path / STATS_NAME).exists()))

    _, source = prepare_normalisation(cfg, split_dates(PairedDataset.from_config(cfg), 2),
                                      tmp_path, merge=merge, barrier=barrier)
    assert source == "computed" and events == ["merge", ("barrier", False)]
    assert (tmp_path / STATS_NAME).exists()


def test_stats_file_is_used_when_it_matches(make_cfg, overrides, tmp_path):
    stats_file = tmp_path / "stats.json"
    assert main(["data", "stats", "tiny", *overrides, f"data.stats_file={stats_file}",
                 "--quiet"]) == 0  # over all 10 dates
    ds = PairedDataset.from_config(make_cfg())
    _, source = prepare_normalisation(make_cfg(f"data.stats_file={stats_file}"),
                                      split_dates(ds, 0), tmp_path / "a")
    assert source == "data.stats_file"
    _, source = prepare_normalisation(make_cfg(f"data.stats_file={stats_file}"),
                                      split_dates(ds, 2), tmp_path / "b")
    assert source == "computed"  # the file covers the validation dates too: not used


def test_samples_are_cells_first(make_cfg, tmp_path):
    cfg = make_cfg()
    ds = PairedDataset.from_config(cfg)
    split = split_dates(ds, 2)
    prepare_normalisation(cfg, split, tmp_path)
    samples = TrainSamples(split.train)
    raw = split.train[3]
    sample = samples[3]
    for key in ("cond", "target", "forcings"):
        assert sample[key].dtype == torch.float32
        assert torch.equal(sample[key], torch.from_numpy(raw[key].T.copy()))
    batch = collate([samples[0], samples[3]])
    n = ds.hr_grid.size
    assert batch["target"].shape == (2, n, 5) and batch["cond"].shape == (2, n, 5)
    assert batch["forcings"].shape[:2] == (2, n)
    assert torch.equal(batch["target"][1], sample["target"])
