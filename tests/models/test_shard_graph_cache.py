"""A shard's divided edge attributes go through the cache (memory-mapped .npy) and equal
the in-memory division exactly."""

from __future__ import annotations

import numpy as np
import torch

from hpcds.config.load import load_config
from hpcds.grids import make_grid
from hpcds.models import shard_graphs as sg

OVERRIDES = ["grid.hr.name=2.0/2.0", "grid.hr.area=global", "model.hidden_grid.name=O12",
             "model.hidden_grid.area=global", "model.encoder_knn=3", "model.refiner_knn=5"]


def test_cached_shard_attributes_equal_the_in_memory_ones(tmp_path):
    cfg = load_config("tiny", OVERRIDES)
    hr, hidden = make_grid(cfg.grid.hr), make_grid(cfg.model.hidden_grid)
    hr_ranges = [(0, 7000), (7000, hr.size)]
    hid_ranges = [(0, 400), (400, hidden.size)]
    scales = np.max([sg.longest_edges(sg.shard_graph_parts(cfg.model, hr, hidden, a, b))
                     for a, b in zip(hr_ranges, hid_ranges)], axis=0)
    want = sg.assemble_shard_graphs(
        sg.shard_graph_parts(cfg.model, hr, hidden, hr_ranges[1], hid_ranges[1]), scales,
        hidden, hr_ranges[1], hid_ranges[1])
    for _ in range(2):  # build the entries, then read them back
        got = sg.build_shard_graphs(cfg.model, hr, hr_ranges[1], hid_ranges[1], tmp_path,
                                    reduce_max=lambda local: scales)
        for name in ("encoder", "decoder", "refiner"):
            for field in ("senders", "receivers", "edge_attr"):
                key = f"{name}_{field}"
                assert torch.equal(getattr(got, key), getattr(want, key)), key
    assert len(list(tmp_path.glob("graph-*-attr-scaled-*.npy"))) == 3
    # another scale (another group's longest edge) is another entry, not a stale hit
    other = sg.build_shard_graphs(cfg.model, hr, hr_ranges[1], hid_ranges[1], tmp_path,
                                  reduce_max=lambda local: scales * 2)
    assert torch.allclose(other.refiner_edge_attr * 2, want.refiner_edge_attr)
    assert len(list(tmp_path.glob("graph-*-attr-scaled-*.npy"))) == 6
