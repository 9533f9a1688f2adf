"""Per-shard model graphs equal the full graphs' slices, edge for edge (P = 3, uneven)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcds.config.load import load_config
from hpcds.grids import make_grid
from hpcds.models import build_model_graphs
from hpcds.models import shard_graphs as sg

# 2° HR (90 x 180 cells), O12 hidden (1,008); small chunks and pieces exercise the cap filter
OVERRIDES = ["grid.hr.name=2.0/2.0", "grid.hr.area=global", "model.hidden_grid.name=O12",
             "model.hidden_grid.area=global", "model.encoder_knn=3",
             "model.refiner_knn=5"]


def _setup(monkeypatch):
    monkeypatch.setattr(sg, "_HR_CHUNK", 256)
    monkeypatch.setattr(sg, "_HIDDEN_PIECE", 32)
    cfg = load_config("tiny", OVERRIDES)
    return cfg, make_grid(cfg.grid.hr), make_grid(cfg.model.hidden_grid)


def _slice(full_s, full_r, full_a, lo, hi):
    r = full_r.numpy()
    a, b = np.searchsorted(r, lo), np.searchsorted(r, hi)
    return full_s[a:b], full_r[a:b], full_a[a:b]


def test_shard_graphs_equal_slices_of_the_full_graphs(monkeypatch, tmp_path):
    cfg, hr, hidden = _setup(monkeypatch)
    full = build_model_graphs(cfg.model, hr)
    n, m = hr.size, hidden.size
    hr_ranges = [(0, n // 2), (n // 2, n // 2 + 37), (n // 2 + 37, n)]  # uneven
    hidden_ranges = [(0, 100), (100, m - 300), (m - 300, m)]
    parts = [sg.shard_graph_parts(cfg.model, hr, hidden, a, b, tmp_path)
             for a, b in zip(hr_ranges, hidden_ranges)]
    scales = np.max([sg.longest_edges(p) for p in parts], axis=0)
    for p, hr_range, hid_range in zip(parts, hr_ranges, hidden_ranges):
        g = sg.assemble_shard_graphs(p, scales, hidden, hr_range, hid_range)
        assert (g.encoder_length_scale, g.decoder_length_scale, g.refiner_length_scale) == (
            full.encoder_length_scale, full.decoder_length_scale, full.refiner_length_scale)
        for name, rng in (("encoder", hid_range), ("decoder", hr_range),
                          ("refiner", hr_range)):
            want = _slice(getattr(full, f"{name}_senders"), getattr(full, f"{name}_receivers"),
                          getattr(full, f"{name}_edge_attr"), *rng)
            got = [getattr(g, f"{name}_{k}") for k in ("senders", "receivers", "edge_attr")]
            for w, x in zip(want, got):
                assert torch.equal(w, x), name
        assert torch.equal(g.hidden_features, full.hidden_features[slice(*hid_range)])
    # the cache holds every shard: a second build reads them back unchanged
    again = sg.shard_graph_parts(cfg.model, hr, hidden, hr_ranges[1], hidden_ranges[1],
                                 tmp_path)
    for name in ("encoder", "decoder", "refiner"):
        assert np.array_equal(again[name].senders, parts[1][name].senders)


def test_encoder_shard_skips_far_chunks(monkeypatch):
    """The cap filter queries only HR chunks that can reach the hidden range."""
    cfg, hr, hidden = _setup(monkeypatch)
    queried = []
    real = sg.cKDTree

    class Spy(real):
        def query(self, x, *args, **kwargs):
            if np.ndim(x) == 2:
                queried.append(len(x))
            return super().query(x, *args, **kwargs)

    monkeypatch.setattr(sg, "cKDTree", Spy)
    g = sg.encoder_shard_graph(hidden, hr, 3, (0, 60))
    assert g.num_edges > 0 and sum(queried) < hr.size // 2


def test_whole_grid_needs_no_reduce_but_a_part_does(monkeypatch):
    cfg, hr, hidden = _setup(monkeypatch)
    whole = sg.build_shard_graphs(cfg.model, hr, (0, hr.size), (0, hidden.size))
    full = build_model_graphs(cfg.model, hr)
    assert torch.equal(whole.refiner_edge_attr, full.refiner_edge_attr)
    with pytest.raises(ValueError, match="reduce_max"):
        sg.build_shard_graphs(cfg.model, hr, (0, 10), (0, 10))
