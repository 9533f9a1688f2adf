"""cached_grid: large grids built once, then memory-mapped from disk, equal to make_grid."""

from __future__ import annotations

import numpy as np

from hpcds.config.schema import GridConfig
from hpcds.grids import grid_cache, make_grid


def test_cached_grid_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(grid_cache, "DISK_CACHE_MIN_CELLS", 0)
    cfg = GridConfig(name="O16", area="alps")
    want = make_grid(cfg)
    first = grid_cache.cached_grid(cfg, tmp_path)
    second = grid_cache.cached_grid(cfg, tmp_path)
    assert len(list(tmp_path.glob("grid-*"))) == 1
    assert not list(tmp_path.glob("*.tmp-*"))
    for g in (first, second):
        assert isinstance(g.latitudes, np.memmap) and not g.latitudes.flags.writeable
        assert (g.name, g.field_shape, g.is_global) == (want.name, want.field_shape,
                                                        want.is_global)
        assert g.spec == want.spec and g.kind == "octahedral"  # the kind survives the cache
        for name in ("latitudes", "longitudes", "area_weights", "native_index"):
            assert np.array_equal(getattr(g, name), getattr(want, name))
    other = grid_cache.cached_grid(GridConfig(name="O16"), tmp_path)
    assert other.size == make_grid(GridConfig(name="O16")).size
    # a damaged entry is rebuilt
    for entry in tmp_path.glob("grid-*"):
        (entry / "latitudes.npy").write_bytes(b"junk")
    assert np.array_equal(grid_cache.cached_grid(cfg, tmp_path).latitudes, want.latitudes)


def test_small_grids_and_no_cache_dir_are_built(tmp_path):
    g = grid_cache.cached_grid(GridConfig(name="O16"), tmp_path)
    assert not isinstance(g.latitudes, np.memmap) and not list(tmp_path.iterdir())
    assert grid_cache.cached_grid(GridConfig(name="O16"), None).size == g.size
