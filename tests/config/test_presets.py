"""Every shipped preset in configs/ loads and validates, and the large presets say what the
issue asks of them (grids, variables, model widths, parallel layout)."""

from __future__ import annotations

import pytest

from hpcds.config.load import PRESETS_DIR, load_config, preset_names
from hpcds.grids import grid_point_count

PRESETS = sorted(PRESETS_DIR.glob("*.yaml"))


def test_presets_exist():
    assert {"tiny", "4km", "o96_o320"} <= set(preset_names())


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_loads_and_validates(path):
    cfg = load_config(str(path))
    # the grids it names are grids hpcds can build (counted without building them)
    for grid in (cfg.grid.hr, cfg.grid.lr, cfg.model.hidden_grid):
        assert grid_point_count(grid) > 0


def test_4km_preset():
    cfg = load_config("4km")
    assert (cfg.grid.hr.name, cfg.grid.lr.name) == ("O2560", "O320")
    assert grid_point_count(cfg.grid.hr) == 26_306_560  # 4.4 km
    assert cfg.data.variables == ["2t", "10u", "10v", "msl", "tp"]
    m = cfg.model
    assert (m.hidden_dim, m.processor_layers, m.window) == (512, 16, 512)
    assert 16 <= cfg.parallel.model_parallel <= 64
    assert cfg.parallel.ensemble_groups >= 2
    # the LR alternative of the issue is an override away
    assert load_config("4km", ["grid.lr.name=O96"]).grid.lr.name == "O96"


def test_o96_o320_preset():
    cfg = load_config("o96_o320")
    assert (cfg.grid.hr.name, cfg.grid.lr.name) == ("O320", "O96")
    assert grid_point_count(cfg.grid.hr) == 421_120
