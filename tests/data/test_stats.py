"""RunningStats against numpy float64 references."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hpcds.data.stats import RunningStats

VARIABLES = ["z", "u", "q"]


def mixed_magnitudes(rng, shape=(9, 3, 2, 500)) -> np.ndarray:
    """(time, variable, ensemble, cell) float64: a 1e5 offset with tiny spread (like
    geopotential), a centred O(10) field, and an O(1e-6) field (like humidity)."""
    x = rng.standard_normal(shape)
    x[:, 0] = 1e5 + 1e-2 * x[:, 0]
    x[:, 1] = 10.0 * x[:, 1]
    x[:, 2] = 1e-6 * (2.0 + x[:, 2])
    return x


def per_variable(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """(variable, everything else) view for numpy references."""
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def stream(x: np.ndarray, splits=(0, 1, 4, 5, 9), **kwargs) -> RunningStats:
    """Statistics of `x` fed in uneven batches along time."""
    stats = RunningStats(VARIABLES)
    for a, b in zip(splits[:-1], splits[1:]):
        stats.update(x[a:b], variable_axis=1, **kwargs)
    return stats


def test_matches_numpy_and_keeps_precision_with_large_offset():
    rng = np.random.default_rng(0)
    x = mixed_magnitudes(rng)
    stats = stream(x)
    ref = per_variable(x)

    np.testing.assert_allclose(stats.mean, ref.mean(axis=1), rtol=1e-13)
    # numpy's two-pass std over all the data at once is the reference; streaming in batches
    # must match it although the spread of variable 0 is 1e-7 of its offset
    np.testing.assert_allclose(stats.stdev, ref.std(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(stats.minimum, ref.min(axis=1))
    np.testing.assert_array_equal(stats.maximum, ref.max(axis=1))
    np.testing.assert_array_equal(stats.count, np.full(3, ref.shape[1]))
    np.testing.assert_allclose(stats.sums, ref.sum(axis=1), rtol=1e-13)
    np.testing.assert_allclose(stats.squares, (ref**2).sum(axis=1), rtol=1e-13)
    assert not stats.has_nans.any()

    # the naive formula the class avoids: it loses the spread of variable 0 entirely
    naive_var = stats.squares / stats.count - (stats.sums / stats.count) ** 2
    naive_error = abs(np.sqrt(max(naive_var[0], 0.0)) - ref[0].std()) / ref[0].std()
    assert naive_error > 1e-3


def test_variable_axis_and_shapes():
    rng = np.random.default_rng(1)
    x = mixed_magnitudes(rng, shape=(4, 3, 1, 50))
    by_time = stream(x, splits=(0, 2, 4))
    flat = RunningStats(VARIABLES)
    flat.update(per_variable(x).T, variable_axis=-1)  # (n, variable)
    np.testing.assert_allclose(flat.mean, by_time.mean, rtol=1e-13)
    np.testing.assert_allclose(flat.stdev, by_time.stdev, rtol=1e-12)
    with pytest.raises(ValueError, match="length 3"):
        flat.update(x, variable_axis=0)


def test_split_and_merge_equals_whole():
    rng = np.random.default_rng(2)
    x = mixed_magnitudes(rng)
    whole = RunningStats(VARIABLES)
    whole.update(x, variable_axis=1)

    # three "ranks", each with a different cell range and its own stream of dates
    parts = []
    for a, b in ((0, 120), (120, 121), (121, 500)):
        part = RunningStats(VARIABLES)
        for t in range(x.shape[0]):
            part.update(x[t, :, :, a:b], variable_axis=0)
        parts.append(part)
    merged = RunningStats(VARIABLES).merge(parts[0]).merge(parts[2]).merge(parts[1])
    merged.merge(RunningStats(VARIABLES))  # merging nothing changes nothing

    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.stdev, whole.stdev, rtol=1e-12)
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12)
    np.testing.assert_allclose(merged.squares, whole.squares, rtol=1e-12)
    np.testing.assert_array_equal(merged.count, whole.count)
    np.testing.assert_array_equal(merged.minimum, whole.minimum)
    np.testing.assert_array_equal(merged.maximum, whole.maximum)

    with pytest.raises(ValueError, match="cannot merge"):
        merged.merge(RunningStats(["z", "u"]))


def test_nans_are_excluded_and_flagged():
    rng = np.random.default_rng(3)
    x = mixed_magnitudes(rng, shape=(5, 3, 2, 40))
    x[1, 1, 0, 3:9] = np.nan  # some of "u"
    x[:, 2] = np.nan  # all of "q"
    stats = stream(x, splits=(0, 2, 5))
    ref = per_variable(x)[:2]  # the references of the two variables that have values

    np.testing.assert_array_equal(stats.has_nans, [False, True, True])
    np.testing.assert_array_equal(stats.count, [400, 394, 0])
    np.testing.assert_allclose(stats.mean[:2], np.nanmean(ref, axis=1), rtol=1e-13)
    np.testing.assert_allclose(stats.stdev[:2], np.nanstd(ref, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(stats.minimum[:2], np.nanmin(ref, axis=1))
    np.testing.assert_array_equal(stats.maximum[:2], np.nanmax(ref, axis=1))
    np.testing.assert_allclose(stats.sums[:2], np.nansum(ref, axis=1), rtol=1e-13)
    for name in ("mean", "stdev", "minimum", "maximum"):
        assert np.isnan(getattr(stats, name)[2]), name  # a variable with no values


def test_weighted_statistics():
    rng = np.random.default_rng(4)
    x = mixed_magnitudes(rng, shape=(6, 3, 2, 60))
    w = rng.uniform(0.1, 2.0, size=60)
    w[[5, 17]] = 0.0  # masked cells
    x[2, 0, 1, 30] = np.nan
    x[:, :, :, 5] = 1e9  # huge values under zero weight must not show anywhere
    stats = stream(x, splits=(0, 1, 3, 6), weights=w)

    ref = per_variable(x)
    rw = per_variable(np.broadcast_to(w, x.shape))
    rw = np.where(np.isnan(ref), 0.0, rw)
    rx = np.where(np.isnan(ref), 0.0, ref)
    mean = (rw * rx).sum(axis=1) / rw.sum(axis=1)
    var = (rw * (rx - mean[:, None]) ** 2).sum(axis=1) / rw.sum(axis=1)
    used = np.where(rw > 0, ref, np.nan)

    np.testing.assert_allclose(stats.count, rw.sum(axis=1), rtol=1e-13)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-13)
    np.testing.assert_allclose(stats.stdev, np.sqrt(var), rtol=1e-12)
    np.testing.assert_allclose(stats.sums, (rw * rx).sum(axis=1), rtol=1e-13)
    np.testing.assert_array_equal(stats.minimum, np.nanmin(used, axis=1))
    np.testing.assert_array_equal(stats.maximum, np.nanmax(used, axis=1))
    np.testing.assert_array_equal(stats.has_nans, [True, False, False])

    # the same as numpy's weighted average of the NaN-free variables
    np.testing.assert_allclose(stats.mean[1], np.average(ref[1], weights=rw[1]), rtol=1e-13)

    with pytest.raises(ValueError, match="non-negative"):
        stats.update(x[0], weights=-w)


def test_dict_and_json_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x = mixed_magnitudes(rng, shape=(3, 3, 1, 20))
    x[:, 2] = np.nan  # an empty variable: NaN statistics must survive strict JSON
    x[0, 1, 0, 0] = np.inf
    stats = stream(x, splits=(0, 1, 3))

    text = json.dumps(stats.to_dict(), allow_nan=False)
    back = RunningStats.from_dict(json.loads(text))
    for name, values in stats.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], values, err_msg=name)

    # and streaming continues after a round trip exactly as without one
    more = mixed_magnitudes(rng, shape=(2, 3, 1, 20))
    stats.update(more, variable_axis=1)
    back.update(more, variable_axis=1)
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.stdev, stats.stdev)

    path = tmp_path / "stats.json"
    stats.save_json(path)
    assert os.listdir(tmp_path) == ["stats.json"]  # no temporary left behind
    loaded = RunningStats.load_json(path)
    assert loaded.variables == VARIABLES
    np.testing.assert_array_equal(loaded.count, stats.count)
    np.testing.assert_array_equal(loaded.mean, stats.mean)


def test_save_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    path.write_text("previous")
    stats = RunningStats(["a"])
    stats.update(np.arange(4.0)[None])

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        stats.save_json(path)
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["stats.json"]
