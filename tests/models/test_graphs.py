"""ModelGraphs: the encoder is the transposed kNN graph, attributes O(1), cache round-trip."""

from __future__ import annotations

import numpy as np
import torch

from hpcds.config.load import load_config
from hpcds.grids import knn_graph, make_grid
from hpcds.grids.graph import edge_attributes
from hpcds.models import build_model_graphs


def test_build_model_graphs_tiny(tmp_path):
    cfg = load_config("tiny")
    hr, hidden = make_grid(cfg.grid.hr), make_grid(cfg.model.hidden_grid)
    g = build_model_graphs(cfg.model, hr, cache_dir=tmp_path)
    assert (g.n_hr, g.n_hidden) == (hr.size, hidden.size)
    k_enc, k_dec = cfg.model.encoder_knn, cfg.model.decoder_knn

    # encoder: HR → hidden, every HR node sends exactly k_enc edges, to its nearest hidden
    knn = knn_graph(hidden, hr, k_enc)
    assert torch.all(torch.diff(g.encoder_receivers) >= 0)
    assert np.array_equal(np.bincount(g.encoder_senders.numpy(), minlength=hr.size),
                          np.full(hr.size, k_enc))
    pairs = set(zip(g.encoder_senders.tolist(), g.encoder_receivers.tolist()))
    assert pairs == set(zip(knn.receivers.tolist(), knn.senders.tolist()))
    # attributes describe the new direction: the HR sender seen from the hidden receiver
    s, r = g.encoder_senders.numpy(), g.encoder_receivers.numpy()
    expected = edge_attributes(hr.unit_vectors()[s], hidden.unit_vectors()[r])
    np.testing.assert_allclose(g.encoder_edge_attr.numpy() * g.encoder_length_scale,
                               expected, rtol=1e-5, atol=1e-7)

    # decoder: hidden → HR, k_dec per HR node, sorted by HR node
    assert torch.equal(g.decoder_receivers, torch.arange(hr.size).repeat_interleave(k_dec))
    assert g.decoder_senders.max() < hidden.size

    # refiner: HR → HR, k_ref per HR node, itself first (distance 0), sorted by HR node
    k_ref = cfg.model.refiner_knn
    assert torch.equal(g.refiner_receivers, torch.arange(hr.size).repeat_interleave(k_ref))
    assert torch.equal(g.refiner_senders.view(hr.size, k_ref)[:, 0], torch.arange(hr.size))
    d = g.refiner_edge_attr[:, 2].view(hr.size, k_ref)
    assert (d[:, 0] == 0).all() and (d[:, 1:] > 0).all() and (d.diff(dim=1) >= 0).all()

    for attr in (g.encoder_edge_attr, g.decoder_edge_attr, g.refiner_edge_attr):
        assert attr.dtype == torch.float32 and attr.shape[1] == 3
        assert torch.isclose(attr[:, 2].max(), torch.tensor(1.0))  # O(1): longest edge = 1
        assert attr[:, :2].abs().max() <= 1.0 + 1e-6
    assert g.hidden_features.shape == (hidden.size, 3)
    torch.testing.assert_close(g.hidden_features.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    for t in (g.encoder_senders, g.encoder_receivers, g.decoder_senders, g.decoder_receivers):
        assert t.dtype == torch.int32  # hpcds.indices.INDEX_DTYPE

    # the second build is served from the cache and is identical
    assert len(list(tmp_path.rglob("*.npz"))) == 3
    again = build_model_graphs(cfg.model, hr, cache_dir=tmp_path)
    assert torch.equal(again.encoder_senders, g.encoder_senders)
    assert torch.equal(again.encoder_edge_attr, g.encoder_edge_attr)
