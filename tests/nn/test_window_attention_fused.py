"""The fused window attention on CPU (the `native` and `triton` backends: the blocked custom op
of hpcds/nn/window_attention_blocked.py) against the float64 reference: outputs and the
gradients of q, k, v; float64 to rounding, float32 to 1e-5 (outputs) / 1e-4 (gradients), bf16
to its unit roundoff; halos (keys longer than the queries), N not a multiple of the block,
N < W, B > 1, many small groups; the dispatch and the planner's view of it."""

from __future__ import annotations

import pytest
import torch

from hpcds.nn import get_op, registered, window_attention_fused, window_attention_reference
from hpcds.nn import window_attention_blocked as blocked
from hpcds.plan.activations import fused_ops

# (B, N, N_k, H, d, W, kv_offset); N_k > N + kv_offset: a right halo as well
CASES = [
    (2, 37, 37, 3, 4, 8, 0),  # N not a multiple of the block (r = 4)
    (1, 5, 5, 2, 3, 16, 0),  # N < W: one partial block, every slab clipped
    (1, 1, 1, 1, 4, 4, 0),  # one token
    (2, 40, 52, 2, 4, 8, 3),  # halos on both sides, B = 2
    (1, 100, 130, 2, 5, 12, 10),  # W/2 = 6 odd: r = 6, S = 18
    (1, 700, 760, 2, 8, 512, 30),  # the 4 km window: r = 128 (W/2 halved), S = 640
]
IDS = [f"B{c[0]}-N{c[1]}-Nk{c[2]}-W{c[5]}-off{c[6]}" for c in CASES]


def _qkv(B, N, n_k, H, d, seed, dtype=torch.float64):
    """Logits of several units (q, k ~ 2·N(0, 1)), as the qk-normed model's."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, n, H, d, generator=gen, dtype=torch.float64) * s).to(dtype)
            for n, s in ((N, 2.0), (n_k, 2.0), (n_k, 1.0))]


def _run(fn, leaves, w, window, offset):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves, window, offset)
    return out, torch.autograd.grad((out * w.to(out.dtype)).sum(), leaves)


def _compare(case, dtype, seed=0):
    """(fused out, grads), (float64 reference out, grads) from the same rounded inputs."""
    B, N, n_k, H, d, W, off = case
    leaves = _qkv(B, N, n_k, H, d, seed, dtype)
    w = torch.randn(B, N, H, d, generator=torch.Generator().manual_seed(seed + 1),
                    dtype=torch.float64)
    fused = _run(window_attention_fused, leaves, w, W, off)
    ref = _run(window_attention_reference, [t.double() for t in leaves], w, W, off)
    return fused, ref


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_matches_the_reference_to_rounding(case):
    (out, grads), (ref, ref_grads) = _compare(case, torch.float64)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for name, g, gr in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-11, msg=f"d{name}")


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:], ids=IDS[:1] + IDS[3:])
def test_float32_matches_the_float64_reference(case):
    (out, grads), (ref, ref_grads) = _compare(case, torch.float32, seed=3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for name, g, gr in zip("qkv", grads, ref_grads):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), gr, rtol=1e-4, atol=1e-4, msg=f"d{name}")


@pytest.mark.parametrize("case", [CASES[3], CASES[5]], ids=[IDS[3], IDS[5]])
def test_bf16_inputs_match_the_float64_reference(case):
    """bf16 in and out, float32 inside: relative L2 error ≤ 1e-2 (≈ 2.5 bf16 unit roundoffs;
    out and dout enter the backward in bf16) and no entry off by more than 5% of the largest
    (a formula error gives O(1) differences)."""
    (out, grads), (ref, ref_grads) = _compare(case, torch.bfloat16, seed=5)
    for name, a, e in [("out", out, ref)] + [(f"d{n}", g, gr)
                                              for n, g, gr in zip("qkv", grads, ref_grads)]:
        assert a.dtype == torch.bfloat16, name
        a = a.double()
        rel = (a - e).norm() / e.norm()
        worst = (a - e).abs().max() / e.abs().max()
        assert rel <= 1e-2 and worst <= 5e-2, f"{name}: relative L2 {rel:.2e}, worst {worst:.2e}"


@pytest.mark.parametrize("rows,group", [(2, 1), (4, 1), (2, 10**9)])
def test_many_groups_and_small_blocks(monkeypatch, rows, group):
    """One block per group (every group boundary, edge groups of their own) and small blocks
    (W = 24 → r = 2 or 3: S/r = 13 or 9 overlapping slabs per key in the backward's adds),
    with halos and B = 2; and everything in one group."""
    monkeypatch.setattr(blocked, "BLOCK_ROWS", rows)
    monkeypatch.setattr(blocked, "GROUP_ELEMENTS", group)
    for case in [(2, 41, 60, 2, 4, 24, 7), (2, 40, 52, 2, 4, 8, 3), (1, 5, 5, 2, 3, 16, 0)]:
        (out, grads), (ref, ref_grads) = _compare(case, torch.float64, seed=11)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        for name, g, gr in zip("qkv", grads, ref_grads):
            torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-11, msg=f"d{name} {case}")


@pytest.mark.parametrize("group", [1, blocked.GROUP_ELEMENTS], ids=["block", "default"])
@pytest.mark.parametrize("N,n_k,W,off,rows", [(700, 760, 512, 30, 128), (3000, 3000, 512, 0, 128),
                                             (41, 60, 24, 7, 2), (5, 5, 16, 0, 128)])
def test_groups_tile_the_blocks_and_only_edge_blocks_get_a_per_block_mask(
        monkeypatch, group, N, n_k, W, off, rows):
    """The groups cover the blocks in order, once; whatever the group size, only the blocks
    whose slab leaves [0, N_k) are in groups that need a (nb, 1, r, S) mask — at most
    ⌈(W/2 − kv_offset)/r⌉ at the start and ⌈(r + W/2)/r⌉ at the end."""
    monkeypatch.setattr(blocked, "BLOCK_ROWS", rows)
    monkeypatch.setattr(blocked, "GROUP_ELEMENTS", group)
    geo = blocked._Blocking(torch.zeros(1, N, 2, 4), n_k, W, off)
    r = geo.r
    for per_block in (geo.r, geo.S):  # the forward's and the backward's grouping
        groups = list(geo.groups(per_block))
        starts = [g0 + i * r for g0, nb, _, _ in groups for i in range(nb)]
        assert starts == list(range(0, N, r))
        assert sum(rows for _, _, rows, _ in groups) == N
        masked = sum(nb for g0, nb, _, k0 in groups if geo.mask(k0, nb) is not geo.band)
        assert masked <= max(0, -(-(W // 2 - off) // r)) + -(-(r + W // 2) // r), groups


def test_halo_shards_equal_the_unsharded_reference_with_gradients():
    """The halo contract, as model-parallel shards call it: shard [a, b) gets keys
    [a − h_l, b + h_r) (h ≤ W/2, clipped at the ends) and kv_offset = h_l; the concatenated
    outputs, and the gradients summed over the overlapping halos, equal the unsharded
    reference's. Shards of 3 < W/2 rows: the halo spans several shards."""
    W, N = 8, 45
    leaves = [t.requires_grad_(True) for t in _qkv(2, N, N, 2, 4, seed=7)]
    w = torch.randn(2, N, 2, 4, dtype=torch.float64)
    ref = window_attention_reference(*leaves, W)
    ref_grads = torch.autograd.grad((ref * w).sum(), leaves)
    q, k, v = leaves
    parts = []
    for a, b in zip([0, 3, 6, 20, 44], [3, 6, 20, 44, 45]):
        lo, hi = max(0, a - W // 2), min(N, b + W // 2)
        parts.append(window_attention_fused(q[:, a:b], k[:, lo:hi], v[:, lo:hi], W, a - lo))
    out = torch.cat(parts, 1)
    grads = torch.autograd.grad((out * w).sum(), leaves)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for name, g, gr in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-11, msg=f"d{name}")
    with pytest.raises(ValueError, match="keys must cover"):
        window_attention_fused(q, k[:, :-1], v[:, :-1], W)
    with pytest.raises(ValueError, match="even"):
        window_attention_fused(q, k, v, 7)


def test_autocast_runs_in_its_dtype_as_the_reference_does():
    """Under CPU bf16 autocast (the reference's matmuls run in bf16 there) float32 inputs are
    cast to bf16 first: the same result, bit for bit, as bf16 inputs without autocast; and
    within bf16 accuracy of the float64 reference."""
    q, k, v = _qkv(1, 50, 50, 2, 8, seed=2, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = window_attention_fused(q, k, v, 16)
        f64 = window_attention_fused(q.double(), k.double(), v.double(), 16)
    assert cast.dtype == torch.bfloat16 and f64.dtype == torch.float64  # float64 is never cast
    assert torch.equal(cast, window_attention_fused(q.bfloat16(), k.bfloat16(), v.bfloat16(), 16))
    ref = window_attention_reference(*(t.bfloat16().double() for t in (q, k, v)), 16)
    assert (cast.double() - ref).norm() / ref.norm() <= 1e-2
    f64_ref = window_attention_reference(q.double(), k.double(), v.double(), 16)
    torch.testing.assert_close(f64, f64_ref, rtol=1e-10, atol=1e-12)


def test_custom_op_registrations():
    """Schema, fake (meta) implementation and autograd registration of the custom op, as
    torch.compile relies on them."""
    q, k, v = (t.requires_grad_(True) for t in _qkv(2, 13, 17, 2, 4, seed=4))
    torch.library.opcheck(torch.ops.hpcds.window_attention_blocked.default, (q, k, v, 6, 2))


def test_backends_are_registered_and_counted_as_fused_by_the_planner():
    assert {"native", "triton"} <= set(registered("window_attention"))
    assert get_op("window_attention", "native") is window_attention_fused
    assert get_op("window_attention", "triton") is window_attention_fused
    assert get_op("window_attention", "reference") is window_attention_reference
    for backend in ("native", "triton"):
        assert "window_attention" in fused_ops(backend)
    assert fused_ops("reference") == frozenset()
