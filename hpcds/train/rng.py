"""Every random state a training step depends on, as plain checkpointable data.

torch's global CPU (and CUDA) generators, numpy's and Python's global generators, and the
run's own `torch.Generator`s (σ/noise draws, data order) are captured together and restored
together, so a resumed run draws exactly what an uninterrupted one would have. States are
held as tensors, ints and tuples only, so checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture(generators: dict[str, torch.Generator]) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    return state


def restore(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def seed_all(seed: int) -> None:
    """Seed the global generators (model initialisation draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
