"""Sharding-invariant Gaussian noise: a counter-based generator keyed by global indices.

Every value is a pure function of (seed, member, step, global node index, variable), so a
rank that holds the nodes [a, b) of the SFC order draws exactly the rows [a, b) of what one
rank holding all nodes draws, and 1 rank and P ranks produce identical ensemble members.
A value does not depend on how many variables are asked for either (columns [0, V) of a
call with V' > V variables equal a call with V variables).

Construction (numpy uint64 arithmetic, wrap-around modulo 2^64 by definition):
  key(seed, member, step) = m(m(m(seed·G + C₀) ⊕ (member·G + C₁)) ⊕ (step·G + C₂))
  counter(node, pair, j)  = node·2^20 + pair·2 + j          (pair = variable // 2, j ∈ {0, 1})
  h                       = m(m(counter·G + key) ⊕ rot(key, 32))
where m is the splitmix64 finaliser (a bijection of uint64 with full avalanche), G the
golden-ratio increment, and step may be negative (-1: the initial latents). The top 53 bits
of h give a uniform in (0, 1); two uniforms (j = 0, 1) give two normals by Box–Muller,
z = √(−2 ln u₀)·(cos, sin)(2π u₁) for the variables 2·pair and 2·pair + 1. Statistical
quality is that of splitmix64 (not cryptographic; ample for Monte Carlo). Limits: node
indices < 2^44, variables < 2^20.

Throughput ≈ 1–3·10^7 values/s on one CPU core; work is chunked over nodes so temporaries
stay ~100 MB whatever the shard size.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

_G = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: the splitmix64 increment
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_C = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344),
      np.uint64(0xA4093822299F31D0))  # digits of π: domain separation of seed/member/step
_NODE_SHIFT = np.uint64(20)
_MAX_NODE = 1 << 44
_MAX_VARS = 1 << 20
_CHUNK_VALUES = 1 << 22  # values generated per chunk (bounds temporaries)
_TWO_PI = 2.0 * np.pi


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (in place where possible)."""
    z = z ^ (z >> np.uint64(30))
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _as_u64(values) -> np.ndarray:
    """Signed or unsigned integers → uint64 by two's complement (so step = -1 is allowed)."""
    return np.asarray(values).astype(np.int64).view(np.uint64)


def _keys(seed: int, members: np.ndarray, step: int) -> np.ndarray:
    """(B,) uint64 stream keys of (seed, member, step)."""
    s = _mix(np.atleast_1d(_as_u64(seed)) * _G + _C[0])
    k = _mix(s ^ (_as_u64(members) * _G + _C[1]))
    return _mix(k ^ (_as_u64(step) * _G + _C[2]))


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 → float64 uniform in the open interval (0, 1) from the top 53 bits."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def batch_noise(seed: int, members: Sequence[int] | np.ndarray, step: int,
                node_index: np.ndarray, n_vars: int) -> np.ndarray:
    """Standard normal noise for several members at once.

    seed: int; members (B,) ints; step: int (may be negative); node_index (n,) int64 global
    node indices (any order, repeats allowed); n_vars: V.
    Returns (B, n, V) float64 with out[b, i, v] a pure function of
    (seed, members[b], step, node_index[i], v).
    """
    members = np.atleast_1d(np.asarray(members, dtype=np.int64))
    node_index = np.asarray(node_index)
    if node_index.ndim != 1 or not np.issubdtype(node_index.dtype, np.integer):
        raise ValueError(f"node_index must be a 1-D integer array, got {node_index.dtype} "
                         f"{node_index.shape}")
    node_index = node_index.astype(np.int64)
    if node_index.size and (node_index.min() < 0 or node_index.max() >= _MAX_NODE):
        raise ValueError(f"node indices must lie in [0, 2^44), got [{node_index.min()}, "
                         f"{node_index.max()}]")
    if not 1 <= n_vars < _MAX_VARS:
        raise ValueError(f"n_vars must lie in [1, 2^20), got {n_vars}")
    B, n, n_pairs = members.size, node_index.size, (n_vars + 1) // 2
    out = np.empty((B, n, n_vars), dtype=np.float64)
    if B == 0 or n == 0:
        return out
    with np.errstate(over="ignore"):
        keys = _keys(seed, members, step)[:, None, None]  # (B, 1, 1)
        keys_rot = (keys << np.uint64(32)) | (keys >> np.uint64(32))
        # counter of (node, pair, j=0); j=1 is +1
        pair_off = np.arange(n_pairs, dtype=np.uint64) * np.uint64(2)  # (P,)
        chunk = max(1, _CHUNK_VALUES // (B * 2 * n_pairs))
        for lo in range(0, n, chunk):
            nodes = node_index[lo:lo + chunk].view(np.uint64)
            base = (nodes << _NODE_SHIFT)[None, :, None] + pair_off[None, None, :]  # (1,c,P)
            u = []
            for j in (0, 1):
                c = base + np.uint64(j)
                h = _mix(_mix(c * _G + keys) ^ keys_rot)  # (B, c, P)
                u.append(_uniform(h))
            r = np.sqrt(-2.0 * np.log(u[0]))
            theta = _TWO_PI * u[1]
            block = out[:, lo:lo + chunk, :]
            block[:, :, 0::2] = r * np.cos(theta)
            if n_vars > 1:
                block[:, :, 1::2] = (r * np.sin(theta))[:, :, : n_vars // 2]
    return out


def member_noise(seed: int, member: int, step: int, node_index: np.ndarray,
                 n_vars: int) -> np.ndarray:
    """Standard normal noise of one member: (n, V) float64; see `batch_noise`."""
    return batch_noise(seed, [member], step, node_index, n_vars)[0]


def make_noise_fn(seed: int, members: Sequence[int] | np.ndarray, node_index: np.ndarray,
                  n_vars: int, device: torch.device | str | None = None, shape=None
                  ) -> Callable[[int], torch.Tensor]:
    """The samplers' `noise_fn`: step ↦ batch_noise(seed, members, step, ...) as a float64
    torch tensor (B, n, V) on `device`. Use step = -1 for the initial latents:
    ``latents = sigmas[0] * noise_fn(-1)``; the samplers call it with step = 0, 1, ….
    shape: a `noise_shape.NoiseShape` (the model's coloured noise; its `draw` replaces
    `batch_noise`) or None (white).
    """
    members = np.atleast_1d(np.asarray(members, dtype=np.int64))
    node_index = np.asarray(node_index, dtype=np.int64)
    draw = batch_noise if shape is None else shape.draw

    def noise_fn(step: int) -> torch.Tensor:
        z = draw(seed, members, step, node_index, n_vars)
        return torch.from_numpy(z).to(device=device or "cpu")

    return noise_fn
