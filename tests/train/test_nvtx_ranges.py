"""NVTX ranges of the trainer's hot loop (one process, CPU: the autograd engine runs backward
on the calling thread, so everything nests on one thread): per optimizer step
data → (loss → backward) per micro-batch → optimizer, the network's components inside
"loss", nothing inside "backward" but, with activation checkpointing, the recomputed
blocks in their components' ranges. Every range is closed where it was opened."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from hpcds.train.trainer import train

COMPONENTS = ["encoder", "processor", "decoder", "refiner"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_steps_open_their_ranges_nested(make_cfg, nvtx_ranges, checkpointing):
    cfg = make_cfg("training.steps=2", "training.grad_accumulation=2", "training.val_dates=0",
                   f"model.activation_checkpointing={checkpointing}")
    train(cfg, progress=False)
    trees = nvtx_ranges.trees()
    assert list(trees) == [threading.get_ident()]
    assert {d for *_, d in nvtx_ranges.events} == {"hpcds"}
    tree = trees[threading.get_ident()]
    names = nvtx_ranges.names
    step = ["data", "loss", "backward", "loss", "backward", "optimizer"]
    assert names(tree) == step * 2
    L, R = cfg.model.processor_layers, cfg.model.refiner_layers
    for name, children in tree:
        if name == "loss":  # the forward: the network's components, no halo (one process)
            assert children == [(c, []) for c in COMPONENTS]
        elif name == "backward" and checkpointing:  # each block recomputed once
            assert all(grand == [] for _, grand in children)
            assert Counter(names(children)) == Counter(
                {"encoder": 2, "processor": L, "decoder": 1, "refiner": R})
        else:
            assert children == [], name
