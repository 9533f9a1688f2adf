"""NVTX ranges of a sharded network (P = 2 in-process ranks, uneven HR ranges): on every rank
each block's halo exchange sits inside its component's range (encoder, processor, decoder,
refiner), the backward's adjoint exchanges sit under "backward", and with activation
checkpointing the recomputed blocks appear under "backward" in their component's range with
their exchange inside. Every range is closed on the thread that opened it, and both ranks
open the same ranges in the same order (their exchanges pair up)."""

from __future__ import annotations

import copy
import threading
from collections import Counter

import pytest

from hpcds.distributed import ShardContext
from hpcds.models.parallelize import parallelize_model
from hpcds.observe import trace_range

COMPONENTS = ["encoder", "processor", "decoder", "refiner"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_halo_exchange_ranges_nest_in_the_blocks_on_every_rank(thread_ranks, tiny_model,
                                                               nvtx_ranges, checkpointing):
    cfg, graphs, ref, inputs, _ = tiny_model
    n, P = graphs.n_hr, 2
    L, R = cfg.model.processor_layers, cfg.model.refiner_layers
    assert L >= 2 and R >= 1
    cuts = [(0, n // 3), (n // 3, n)]

    def rank(r, transport):
        net = copy.deepcopy(ref)
        net.activation_checkpointing = checkpointing
        shard = parallelize_model(net, ShardContext(r, P, None, transport), n_hr=n,
                                  hr_ranges=cuts)  # verify's exchanges open no range
        mark = len(nvtx_ranges.events)
        with trace_range("loss"):
            out = net(*(t[:, shard.hr] for t in inputs[:3]), inputs[3])
            loss = out.square().sum()
        with trace_range("backward"):
            loss.backward()
        assert len(nvtx_ranges.events) > mark
        return threading.get_ident()

    tids = thread_ranks(P, rank)
    trees = nvtx_ranges.trees()
    assert set(trees) == set(tids)
    assert {d for *_, d in nvtx_ranges.events} == {"hpcds"}
    names = nvtx_ranges.names
    for tid in tids:
        tree = trees[tid]
        assert names(tree) == ["loss", "backward"]
        forward, backward = tree[0][1], tree[1][1]
        assert names(forward) == COMPONENTS
        per_component = dict(forward)
        # one exchange per block: encoder (graph HR → hidden; the embeddings exchange
        # nothing), L window blocks, decoder, R refiner blocks; nothing nested inside them
        for name, count in zip(COMPONENTS, (1, L, 1, R)):
            assert per_component[name] == [("halo_exchange", [])] * count, name
        n_exchanges = 2 + L + R
        # the adjoints: one per forward exchange, directly under "backward"
        assert names(backward).count("halo_exchange") == n_exchanges
        assert all(children == [] for name, children in backward if name == "halo_exchange")
        recomputed = [(name, children) for name, children in backward if name != "halo_exchange"]
        if not checkpointing:
            assert recomputed == []
        else:  # each block once more, in its component's range, its exchange inside
            assert Counter(name for name, _ in recomputed) == Counter(
                {"encoder": 2, "processor": L, "decoder": 1, "refiner": R})
            assert sorted(len(children) for _, children in recomputed) == \
                [0] + [1] * n_exchanges  # the input embedding exchanges nothing
            assert all(children in ([], [("halo_exchange", [])])
                       for _, children in recomputed)
    assert trees[tids[0]] == trees[tids[1]]  # the same exchanges in the same order
