"""Fused-kernel benchmark: graph attention, modulated LayerNorm and window attention, per backend.

    .venv/bin/python perf/kernels.py                    # CPU: 1/32 of the shard sizes, 2 threads
    .venv/bin/python perf/kernels.py --scale 1 --record # GPU: the full shard sizes, recorded

For each kernel, pass (forward; forward + backward) and backend: the minimum bytes the pass
must move and the FLOPs it must do (formulas below), the median time over `--repeat` timed
calls after `--warmup` (CUDA events on a GPU, perf_counter on CPU), the achieved bandwidth
and its fraction of the measured peak (a large device-to-device copy timed in the same run,
2 × its bytes moved), GFLOP/s, the speed-up over the reference, and the peak memory the call
allocates beyond its inputs (one extra, untimed call: `torch.cuda.max_memory_allocated` on a GPU,
the CPU allocator's events through torch.profiler on CPU). Each timed call sits in an NVTX range
`bench.<kernel>.<backend>` (the `nvtx` package: no-ops without a GPU).

Sizes (float32 unless --dtype, batch 1), from the 4.4 km configuration sharded over 16 GPUs:
26.3 M HR points → 1.64 M per shard, hidden O1280 (6.6 M nodes) → 412 k per shard, width 512 as
8 heads × 64:
  decoder   1.64 M HR destinations × k = 4 edges from 412 k hidden sources
  encoder   412 k hidden destinations, each HR point sending to 4 of them (in-degree ~16,
            uneven) from 1.64 M HR sources
  layernorm 1.64 M rows × 512 channels
  window    the processor's sliding-window attention on one 48-way 4km shard (the shard the
            H200 measured, perf/results/gpu-20261204-h200.md): 137,494 hidden rows, window 512,
            16 heads × 32, keys with a W/2 halo on each side (kv_offset = 256)
Sources are SFC-local (a destination's sources are near it in the node order), as in the model.
The reference materialises (E, H, d) tensors: 13 GB per tensor for the full decoder (and 6.8 GB
of window logits), so on a CPU the default `--scale` is 1/32 (every node and edge count scaled;
per-node work unchanged).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import nvtx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_record  # noqa: E402  (perf/machine.py)

from hpcds.nn import get_op, registered  # noqa: E402

FULL = {  # name: (n_dst, n_src, edges per destination or None for the encoder pattern)
    "decoder": (1_644_160, 412_480, 4),
    "encoder": (412_480, 1_644_160, None),
}
LN_FULL = (1_644_160, 512)
HEADS, HEAD_DIM, KNN = 8, 64, 4
WINDOW_FULL = dict(n=137_494, window=512, heads=16, head_dim=32)  # 48-way 4km shard


# ---- inputs -----------------------------------------------------------------------------

def decoder_graph(n_dst: int, n_src: int, k: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Each destination receives k edges from sources near its position in the shared order."""
    receivers = torch.arange(n_dst).repeat_interleave(k)
    centre = receivers * n_src // n_dst
    senders = (centre + torch.randint(-8, 9, centre.shape, generator=gen)).clamp(0, n_src - 1)
    return senders, receivers


def encoder_graph(n_dst: int, n_src: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Each source sends to KNN destinations near it; sorted by destination (uneven degrees)."""
    senders = torch.arange(n_src).repeat_interleave(KNN)
    centre = senders * n_dst // n_src
    receivers = (centre + torch.randint(-2, 3, centre.shape, generator=gen)).clamp(0, n_dst - 1)
    order = torch.argsort(receivers, stable=True)
    return senders[order], receivers[order]


def attention_inputs(name: str, scale: float, device, dtype, gen):
    n_dst_full, n_src_full, k = FULL[name]
    n_dst, n_src = max(2, int(n_dst_full * scale)), max(2, int(n_src_full * scale))
    senders, receivers = (decoder_graph(n_dst, n_src, k, gen) if k else
                          encoder_graph(n_dst, n_src, gen))
    q = torch.randn(1, n_dst, HEADS, HEAD_DIM, generator=gen).to(device, dtype)
    k_, v = (torch.randn(1, n_src, HEADS, HEAD_DIM, generator=gen).to(device, dtype)
             for _ in range(2))
    bias = torch.randn(senders.numel(), HEADS, generator=gen).to(device, dtype)
    return (q, k_, v, bias, senders.to(device), receivers.to(device), n_dst)


def window_inputs(scale: float, device, dtype, gen):
    """q (1, N, H, d), k/v (1, N + W, H, d): a shard's own rows with W/2 halo rows each side."""
    w = WINDOW_FULL
    n, W = max(2, int(w["n"] * scale)), w["window"]
    q = torch.randn(1, n, w["heads"], w["head_dim"], generator=gen).to(device, dtype)
    k, v = (torch.randn(1, n + W, w["heads"], w["head_dim"], generator=gen).to(device, dtype)
            for _ in range(2))
    return (q, k, v, W, W // 2)


# ---- what each pass must move and compute -------------------------------------------------

def attention_cost(n_dst: int, n_src: int, E: int, s: int, backward: bool) -> tuple[int, int]:
    """Minimum bytes and FLOPs. Forward: read q, k, v (each row once), the edge bias, senders
    and row pointer; write out and the float32 lse. 4·E·H·d FLOPs (q·k, p·v) + ~5·E·H (softmax).
    Backward adds: read q, k, v, out, dout, lse, bias, senders; write dq, dk, dv, d_bias;
    10·E·H·d (recomputed q·k, dout·v, dq, dk, dv) + ~8·E·H."""
    row, H, d = HEADS * HEAD_DIM * s, HEADS, HEAD_DIM
    fwd_bytes = (2 * n_dst + 2 * n_src) * row + E * (H * s + 8) + (n_dst + 1) * 8 + n_dst * H * 4
    fwd_flops = 4 * E * H * d + 5 * E * H
    if not backward:
        return fwd_bytes, fwd_flops
    bwd_bytes = ((4 * n_dst + 4 * n_src) * row + E * (2 * H * s + 8) + (n_dst + 1) * 8
                 + n_dst * H * 4)
    return fwd_bytes + bwd_bytes, fwd_flops + 10 * E * H * d + 8 * E * H


def layer_norm_cost(N: int, C: int, s: int, backward: bool) -> tuple[int, int]:
    """Forward: read x, write y (+ scale/shift, the float32 mean/rstd), ~7 FLOPs per element.
    Backward adds: read x, dy (+ stats), write dx (+ dscale/dshift), ~11 FLOPs per element."""
    fwd = (2 * N * C * s + 2 * C * s + 2 * N * 4, 7 * N * C)
    if not backward:
        return fwd
    return fwd[0] + 3 * N * C * s + 2 * N * 4 + 4 * C * s, fwd[1] + 11 * N * C


def window_cost(N: int, n_k: int, W: int, H: int, d: int, s: int, backward: bool
                ) -> tuple[int, int]:
    """Forward: read q, k, v, write out and the float32 lse; 4·N·(W+1)·H·d FLOPs (q·k, p·v over
    the band) + ~5·N·(W+1)·H (softmax). Backward adds: read q, k, v, out, dout, lse, write dq,
    dk, dv; 10·N·(W+1)·H·d (recomputed q·k, dout·v, dq, dk, dv) + ~8·N·(W+1)·H."""
    row, band = H * d * s, N * (W + 1) * H
    fwd = ((2 * N + 2 * n_k) * row + N * H * 4, 4 * band * d + 5 * band)
    if not backward:
        return fwd
    return (fwd[0] + (4 * N + 4 * n_k) * row + N * H * 4,
            fwd[1] + 10 * band * d + 8 * band)


# ---- timing ----------------------------------------------------------------------------

def median_seconds(fn, warmup: int, repeat: int, device: torch.device, label: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        with nvtx.annotate(label):
            if device.type == "cuda":
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(fn, device: torch.device) -> int:
    """Peak memory one call of fn allocates beyond what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for e in sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def copy_bandwidth(device, warmup: int, repeat: int, nbytes: int = 1 << 29) -> float:
    """Peak bandwidth in bytes/s as a device-to-device copy sees it (read + write)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), warmup, repeat, device, "bench.copy")
    return 2 * nbytes / t


def forward_backward(fn, args, n_leaves: int):
    """A callable running fn forward, then backward from a fixed random output gradient."""
    leaves = [a.detach().requires_grad_(True) for a in args[:n_leaves]]
    rest = args[n_leaves:]
    grad = torch.randn_like(fn(*leaves, *rest))

    def run():
        out = fn(*leaves, *rest)
        torch.autograd.grad(out, leaves, grad)
    return run


# ---- the benchmark ---------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    on_gpu = torch.cuda.is_available()
    ap.add_argument("--scale", type=float, default=1.0 if on_gpu else 1 / 32,
                    help="fraction of the shard sizes (default: 1 on a GPU, 1/32 on CPU)")
    ap.add_argument("--backends", default=None,
                    help="comma-separated (default: reference, native and, on a GPU, triton)")
    ap.add_argument("--kernels", default="decoder,encoder,layernorm,window")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="inputs' dtype (bfloat16: what training uses on a GPU)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30 if on_gpu else 7)
    ap.add_argument("--record", action="store_true",
                    help="write perf/results/kernels-<date><tag>.json and .md")
    ap.add_argument("--tag", default="", help="suffix of the record's name, e.g. -window")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = getattr(torch, args.dtype)
    s = torch.finfo(dtype).bits // 8
    backends = (args.backends.split(",") if args.backends else
                ["reference", "native"] + (["triton"] if on_gpu else []))
    gen = torch.Generator().manual_seed(0)
    peak = copy_bandwidth(device, args.warmup, args.repeat)
    print(f"device {device} ({torch.get_num_threads()} threads), {args.dtype}, "
          f"scale {args.scale:g}, "
          f"copy peak {peak / 1e9:.1f} GB/s")

    rows = []
    for kernel in args.kernels.split(","):
        if kernel == "layernorm":
            N, C = max(2, int(LN_FULL[0] * args.scale)), LN_FULL[1]
            x = torch.randn(1, N, C, generator=gen).to(device, dtype)
            sc, sh = (torch.randn(1, C, generator=gen).to(device, dtype) for _ in range(2))
            op_name, call_args, n_leaves = "modulated_layer_norm", (x, sc, sh), 3
            size = f"{N:,} × {C}"
            cost = lambda bwd: layer_norm_cost(N, C, s, bwd)  # noqa: E731
        elif kernel == "window":
            call_args = window_inputs(args.scale, device, dtype, gen)
            (_, N, H, d), n_k, W = call_args[0].shape, call_args[1].shape[1], call_args[3]
            op_name, n_leaves = "window_attention", 3
            size = f"{N:,} rows (+{n_k - N} halo), W {W}, {H}×{d}"
            cost = lambda bwd, N=N, n_k=n_k, W=W, H=H, d=d: window_cost(  # noqa: E731
                N, n_k, W, H, d, s, bwd)
        else:
            call_args = attention_inputs(kernel, args.scale, device, dtype, gen)
            n_dst, n_src, E = call_args[0].shape[1], call_args[1].shape[1], call_args[4].numel()
            op_name, n_leaves = "graph_attention", 4
            size = f"{n_dst:,} dst × {E / n_dst:.1f} edges, {n_src:,} src, {HEADS}×{HEAD_DIM}"
            cost = lambda bwd, n_dst=n_dst, n_src=n_src, E=E: attention_cost(  # noqa: E731
                n_dst, n_src, E, s, bwd)
        for pass_name, bwd in (("forward", False), ("forward+backward", True)):
            nbytes, flops = cost(bwd)
            ref_time, timed = None, []
            for backend in backends:
                if backend != "reference" and backend not in registered(op_name):
                    continue
                fn = get_op(op_name, backend)
                if backend != "reference" and fn is get_op(op_name, "reference"):
                    print(f"  {backend}: unavailable here, skipped")
                    continue
                if fn in timed:  # e.g. window attention: one function for native and triton
                    print(f"  {backend}: the same function as a backend above, skipped")
                    continue
                timed.append(fn)
                if bwd:
                    run = forward_backward(fn, call_args, n_leaves)
                else:
                    def run(fn=fn):
                        with torch.no_grad():
                            fn(*call_args)
                t = median_seconds(run, args.warmup, args.repeat, device,
                                   f"bench.{kernel}.{backend}")
                if backend == "reference":
                    ref_time = t
                mem = peak_bytes(run, device)
                rows.append(dict(kernel=kernel, pass_=pass_name, backend=backend, size=size,
                                 min_bytes=nbytes, flops=flops, time_ms=t * 1e3,
                                 gb_per_s=nbytes / t / 1e9, peak_fraction=nbytes / t / peak,
                                 gflop_per_s=flops / t / 1e9,
                                 speedup=(ref_time / t) if ref_time else None,
                                 peak_mem_mb=mem / 1e6))
                print(format_row(rows[-1]), flush=True)

    table = format_table(rows)
    print("\n" + table)
    if args.record:
        extra = dict(scale=args.scale, dtype=args.dtype, copy_peak_gb_per_s=peak / 1e9,
                     backends=backends)
        out = write_record("kernels", rows, tag=args.tag, **extra)
        write_markdown(out.with_suffix(".md"), table, extra)
    return 0


COLUMNS = ("kernel", "pass", "backend", "size", "min MB", "GFLOP", "median ms", "GB/s",
           "% of copy peak", "GFLOP/s", "× reference", "peak MB")


def format_row(r: dict) -> str:
    speed = f"{r['speedup']:.1f}" if r["speedup"] else "–"
    return " | ".join([r["kernel"], r["pass_"], r["backend"], r["size"],
                       f"{r['min_bytes'] / 1e6:,.0f}", f"{r['flops'] / 1e9:.2f}",
                       f"{r['time_ms']:,.1f}", f"{r['gb_per_s']:.2f}",
                       f"{100 * r['peak_fraction']:.1f}", f"{r['gflop_per_s']:.2f}", speed,
                       f"{r['peak_mem_mb']:,.1f}"])


def format_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + format_row(r) + " |" for r in rows])


def write_markdown(path: Path, table: str, extra: dict) -> None:
    m = machine_info()
    path.write_text(
        f"# Fused kernels: `{' '.join(sys.argv)}`\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}, torch {m.get('torch')}, "
        f"{m.get('torch_threads')} threads, load average (1 min) {m['load_average_1min']}. "
        f"Scale {extra['scale']:g} of the shard sizes, {extra['dtype']}, batch 1; copy peak "
        f"{extra['copy_peak_gb_per_s']:.1f} GB/s.\n\n{table}\n")
    print(f"recorded {path}")


if __name__ == "__main__":
    sys.exit(main())
