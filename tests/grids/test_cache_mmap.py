"""Large cached arrays come back as copy-on-write memory maps of the cache files, equal to
what was stored; writing to them never changes the entry; derived .npy entries build once."""

from __future__ import annotations

import logging

import numpy as np

from hpcds.grids.cache import cached_arrays, cached_npy


def test_large_members_are_memory_mapped_and_equal(tmp_path):
    rng = np.random.default_rng(0)
    stored = {"big": rng.integers(0, 1 << 40, 50_000), "attr": rng.random((20_000, 3),
                                                                          dtype=np.float32),
              "fortran": np.asfortranarray(rng.random((300, 200))), "small": np.arange(5)}
    cached_arrays("t", {"a": 1}, lambda: stored, tmp_path)
    got = cached_arrays("t", {"a": 1}, lambda: 1 / 0, tmp_path, mmap_min_bytes=100_000)
    assert {k for k, v in got.items() if isinstance(v, np.memmap)} == {"big", "attr",
                                                                       "fortran"}
    for name, want in stored.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        np.testing.assert_array_equal(got[name], want)
    got["big"][:10] = -1  # copy-on-write: the file keeps the stored values
    again = cached_arrays("t", {"a": 1}, lambda: 1 / 0, tmp_path, mmap_min_bytes=100_000)
    np.testing.assert_array_equal(again["big"], stored["big"])


def test_cached_npy_builds_once_and_rebuilds_a_bad_entry(tmp_path, caplog):
    calls = []

    def fill(out):
        calls.append(1)
        out[:] = np.arange(out.size, dtype=np.float32).reshape(out.shape) / np.float32(3)

    first = cached_npy("scaled", {"s": 3}, (1000, 3), np.float32, fill, tmp_path)
    second = cached_npy("scaled", {"s": 3}, (1000, 3), np.float32, fill, tmp_path)
    want = np.arange(3000, dtype=np.float32).reshape(1000, 3) / np.float32(3)
    assert len(calls) == 1 and isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, want)
    np.testing.assert_array_equal(first, second)
    del first, second  # (a mapped file truncated in place would fault on access)
    (path,) = [p for p in tmp_path.iterdir()]  # no temporary file left behind
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with caplog.at_level(logging.WARNING, logger="hpcds.grids.cache"):
        third = cached_npy("scaled", {"s": 3}, (1000, 3), np.float32, fill, tmp_path)
    assert len(calls) == 2 and "rebuilding" in caplog.text
    np.testing.assert_array_equal(third, want)
