"""Graph index tensors in int32 (the model's dtype, hpcds.indices.INDEX_DTYPE) and int64:
every graph-attention backend (reference, triton through its interpreter, native CPU) gives
bit-identical outputs and gradients for both (the same kernel, only the index loads differ),
matching a float64 reference; the model's graphs, shards and the planner's meta graphs are
int32, half the bytes of int64."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from hpcds.config.load import load_config
from hpcds.distributed.halo import graph_shard, halo_needs, local_graph_shard
from hpcds.grids import make_grid, shard_ranges
from hpcds.models import DownscalerNet, build_model_graphs
from hpcds.indices import INDEX_DTYPE, index_tensor
from hpcds.nn import graph_attention_reference, kernels
from hpcds.nn.fused_ops import csr_rowptr
from hpcds.plan.activations import GRAPHS, ShardShape, meta_graphs

BACKENDS = ("reference", "triton", "native")


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _op(backend: str):
    if backend == "reference":
        return graph_attention_reference
    assert getattr(kernels, f"{backend}_available")(), f"{backend} kernels unavailable"
    return getattr(kernels, f"graph_attention_{backend}")


def _graph(gen, n_src: int, n_dst: int, max_deg: int):
    """Destination-sorted int64 edges, uneven in-degrees (destination 0 has none)."""
    senders, receivers = [], []
    for i in range(1, n_dst):
        deg = int(torch.randint(0, max_deg + 1, (1,), generator=gen))
        senders.append(torch.randperm(n_src, generator=gen)[:deg])
        receivers.append(torch.full((senders[-1].numel(),), i, dtype=torch.int64))
    return torch.cat(senders), torch.cat(receivers)


def _run(fn, leaves, senders, receivers, n_dst, w):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves, senders, receivers, n_dst)
    return [out, *torch.autograd.grad((out * w.to(out.dtype)).sum(), leaves)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_int32_indices_equal_int64_and_match_reference(backend, dtype):
    gen = torch.Generator().manual_seed(1234)
    B, n_src, n_dst, H, d = 2, 13, 17, 2, 16
    senders, receivers = _graph(gen, n_src, n_dst, 6)
    E = senders.numel()
    leaves = [torch.randn(B, n_dst, H, d, generator=gen, dtype=dtype) * 2,
              torch.randn(B, n_src, H, d, generator=gen, dtype=dtype) * 2,
              torch.randn(B, n_src, H, d, generator=gen, dtype=dtype),
              torch.randn(E, H, generator=gen, dtype=dtype)]
    w = torch.randn(B, n_dst, H, d, generator=gen, dtype=torch.float64)
    fn = _op(backend)
    got64 = _run(fn, leaves, senders, receivers, n_dst, w)
    got32 = _run(fn, leaves, senders.int(), receivers.int(), n_dst, w)
    names = ("out", "q", "k", "v", "edge_bias")
    for name, a, b in zip(names, got32, got64):
        assert a.dtype == b.dtype == dtype, name
        assert torch.equal(a, b), name  # the same kernel: bit for bit
    ref = _run(graph_attention_reference, [t.double() for t in leaves], senders, receivers,
               n_dst, w)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                         atol=1e-11)
    for name, a, r in zip(names, got32, ref):
        torch.testing.assert_close(a.double(), r, **tol, msg=name)


@pytest.mark.parametrize("backend", ("triton", "native"))
def test_mixed_index_dtypes_are_refused(backend):
    q = torch.zeros(1, 3, 1, 4)
    s = torch.tensor([0, 1], dtype=torch.int32)
    r = torch.tensor([1, 2], dtype=torch.int64)
    with pytest.raises(TypeError, match="int32 or int64"):
        _op(backend)(q, q, q, torch.zeros(2, 1), s, r, 3)
    with pytest.raises(TypeError, match="int32 or int64"):
        _op(backend)(q, q, q, torch.zeros(2, 1), s.to(torch.int16), r.to(torch.int16), 3)


@pytest.mark.parametrize("backend", ("triton", "native"))
def test_opcheck_and_compile_int32(backend):
    """The custom ops' schema, fake and autograd registrations with int32 indices, and
    torch.compile tracing through them without a graph break."""
    fn = _op(backend)
    gen = torch.Generator().manual_seed(7)
    senders, receivers = _graph(gen, 7, 6, 3)
    senders, receivers = senders.int(), receivers.int()
    q = torch.randn(1, 6, 2, 4, generator=gen, requires_grad=True)
    k, v = (torch.randn(1, 7, 2, 4, generator=gen, requires_grad=True) for _ in range(2))
    bias = torch.randn(senders.numel(), 2, generator=gen, requires_grad=True)
    torch.library.opcheck(getattr(torch.ops.hpcds, f"graph_attention_{backend}").default,
                          (q, k, v, bias, senders, receivers, csr_rowptr(receivers, 6)))
    if backend == "native":  # (compiling the triton launch under the interpreter is slow)
        def f(q, k, v, bias):
            return fn(q, k, v, bias, senders, receivers, 6).square().sum()

        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        grads = torch.autograd.grad(compiled(q, k, v, bias), (q, k, v, bias))
        ref = torch.autograd.grad(f(q, k, v, bias), (q, k, v, bias))
        for g, r in zip(grads, ref):
            torch.testing.assert_close(g, r)


def test_native_module_index_dtypes():
    """The bindings dispatch on the senders' dtype; csc_order takes both (perm, colptr int64)."""
    from hpcds.nn.native_kernels import load_module

    mod = load_module("_hpcds_native")
    gen = torch.Generator().manual_seed(5)
    senders = torch.randint(0, 50, (400,), generator=gen)
    orders = []
    for dt in (torch.int64, torch.int32):
        perm, colptr = torch.empty(400, dtype=torch.int64), torch.empty(51, dtype=torch.int64)
        mod.csc_order(senders.to(dt), 50, perm, colptr)
        orders.append((perm, colptr))
    assert torch.equal(orders[0][0], orders[1][0]) and torch.equal(orders[0][1], orders[1][1])
    assert torch.equal(orders[1][0], torch.argsort(senders, stable=True))
    with pytest.raises(IndexError, match="outside"):
        mod.csc_order(torch.tensor([0, 7], dtype=torch.int32), 5, torch.empty(2, dtype=torch.int64),
                      torch.empty(6, dtype=torch.int64))
    # senders int32 with receivers int64: refused by the binding itself
    q = torch.zeros(1, 3, 1, 4)
    out, lse = torch.empty(1, 3, 1, 4), torch.empty(1, 3, 1)
    with pytest.raises(ValueError, match="same dtype"):
        mod.graph_attention_forward(q, q, q, torch.zeros(1, 2, 1),
                                    torch.tensor([0, 1], dtype=torch.int32),
                                    torch.tensor([1, 2]), torch.tensor([0, 0, 1, 2]), out, lse,
                                    1)


def test_csr_rowptr_int32_receivers():
    receivers = torch.tensor([1, 1, 2, 4, 4, 4])
    want = torch.tensor([0, 0, 2, 3, 3, 6, 6])
    for dt in (torch.int64, torch.int32):
        got = csr_rowptr(receivers.to(dt), 6)
        assert got.dtype == torch.int64 and torch.equal(got, want)


def test_index_tensor():
    a = np.arange(5, dtype=np.int64)
    t = index_tensor(a)
    assert t.dtype == INDEX_DTYPE == torch.int32 and torch.equal(t.long(), torch.arange(5))
    b = np.arange(5, dtype=np.int32)
    assert index_tensor(b).data_ptr() == b.ctypes.data  # int32 already: no copy
    with pytest.raises(ValueError, match="do not fit"):
        index_tensor(np.array([0, 2**31], dtype=np.int64))
    with pytest.raises(TypeError):
        index_tensor(np.zeros(3, dtype=np.float32))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = load_config("tiny")
    hr = make_grid(cfg.grid.hr)
    return cfg, hr, build_model_graphs(cfg.model, hr, cache_dir=tmp_path_factory.mktemp("g"))


def _index_fields(graphs):
    return {name: getattr(graphs, name) for name in vars(graphs)
            if name.endswith(("_senders", "_receivers"))}


def test_model_graphs_and_buffers_are_int32(tiny):
    cfg, hr, graphs = tiny
    fields = _index_fields(graphs)
    assert len(fields) == 2 * len(GRAPHS)
    for name, t in fields.items():
        assert t.dtype == torch.int32, name
    net = DownscalerNet(cfg.model, 3, 4, graphs)
    for name, buf in net.named_buffers():
        if name.endswith(("_senders", "_receivers")):
            assert buf.dtype == torch.int32, name
    # the saving: 4 bytes per index instead of 8
    idx_bytes = sum(t.numel() * t.element_size() for t in fields.values())
    assert idx_bytes == 4 * sum(t.numel() for t in fields.values())


def test_graph_shards_are_int32(tiny):
    _, hr, graphs = tiny
    s, r = graphs.decoder_senders.numpy(), graphs.decoder_receivers.numpy()
    src, dst = shard_ranges(graphs.n_hidden, 3), shard_ranges(graphs.n_hr, 3)
    needs = []
    parts = []
    for rank in range(3):
        d0, d1 = dst[rank]
        lo, hi = np.searchsorted(r, d0), np.searchsorted(r, d1)
        parts.append((s[lo:hi], r[lo:hi]))
        needs.append(halo_needs(s[lo:hi], src, rank))
    for rank in range(3):
        full = graph_shard(s, r, src, dst, rank)
        local = local_graph_shard(*parts[rank], src, dst, rank, needs)
        for gs in (full, local):
            assert gs.senders.dtype == gs.receivers.dtype == torch.int32
        assert torch.equal(full.senders, local.senders)
        assert torch.equal(full.receivers, local.receivers)
    # the caller's arrays are left as they were (int32 in, no in-place rebasing)
    assert np.array_equal(s, graphs.decoder_senders.numpy())


def test_planner_meta_graphs_count_int32(tiny):
    _, _, graphs = tiny
    edges = {g: getattr(graphs, f"{g}_senders").numel() for g in GRAPHS}
    meta = meta_graphs(ShardShape(graphs.n_hr, graphs.n_hidden, edges, batch=1))
    for name, t in _index_fields(meta).items():
        assert t.dtype == INDEX_DTYPE and t.untyped_storage().nbytes() == 4 * t.numel(), name
