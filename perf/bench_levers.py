"""Interleaved A/B of hpcds's eager-mode levers on the peer benchmark's shapes, in ONE process:

    PYTHONPATH=. OMP_NUM_THREADS=1 python perf/bench_levers.py --shape small --repeats 11

Variants of one DownscalerNet (deep copies: the same parameters), backend auto (native):
  before      the reference gated residual and qk-norm (what the blocks ran before)
  +gated      gated_linear folded (hpcds/nn/gated_linear.py)
  +gated+rms  and rms_norm with its hand-written gradient (hpcds/nn/rms_norm.py)
Each round times one forward+backward then one no_grad forward of every variant in turn, so a
load change on a shared machine hits all alike; medians over rounds, ratios against `before`.

`--malloc ab` instead times the current network with glibc's default malloc against
hpcds/cpu_malloc.py's setting, switching between them every round (malloc_trim on the way
back to the default, so the default pays its page faults again). `--malloc keep` applies the
setting for the whole run (as the hpcds CLI does), `--malloc default` leaves glibc alone.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_anemoi import N_FORCINGS, N_VARS, hpcds_graphs, inputs  # noqa: E402


def _set_malloc(keep: bool) -> None:
    from hpcds.cpu_malloc import M_MMAP_MAX, M_TRIM_THRESHOLD

    libc = ctypes.CDLL("libc.so.6")
    if keep:
        libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    else:  # glibc's defaults, and give back what the other mode kept
        libc.mallopt(M_MMAP_MAX, 65536), libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="small", choices=["tiny", "small", "large"])
    p.add_argument("--checkpoint", action="store_true", help="activation checkpointing on")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--malloc", choices=["default", "keep", "ab"], default="default")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from hpcds.models import DownscalerNet
    from hpcds.nn import gated_linear as gl
    from hpcds.nn import rms_norm as rn

    cfg, graphs = hpcds_graphs(a.shape, "auto", a.checkpoint)
    base = DownscalerNet(cfg, N_VARS, N_FORCINGS, graphs).train()
    x = inputs(graphs.n_hr)

    def variant(gated: bool, rms: bool) -> torch.nn.Module:
        net = copy.deepcopy(base)
        for m in net.modules():
            if hasattr(m, "residual_op"):
                m.residual_op = gl.gated_linear_folded if gated else gl.gated_linear_reference
            if hasattr(m, "rms_op"):
                m.rms_op = rn.rms_norm_fused if rms else rn.rms_norm_reference
        return net

    if a.malloc == "ab":  # (name, net, malloc setting to switch to before its round)
        runs = [("glibc default", base, False), ("cpu_malloc", base, True)]
    else:
        if a.malloc == "keep":
            _set_malloc(True)
        runs = [("before", variant(False, False), None), ("+gated", variant(True, False), None),
                ("+gated+rms", variant(True, True), None)]

    def step(net):
        net(*x).square().mean().backward()
        net.zero_grad(set_to_none=True)

    def infer(net):
        with torch.no_grad():
            net(*x)
    times = {(name, what): [] for name, _, _ in runs for what in ("fwd+bwd", "infer")}
    for _, net, _ in runs:
        step(net)  # warm-up
    for _ in range(a.repeats):
        for name, net, keep in runs:
            if keep is not None:
                _set_malloc(keep)
                step(net)  # untimed: the first step after a switch settles the heap
            for what, fn in (("fwd+bwd", step), ("infer", infer)):
                t0 = time.perf_counter()
                fn(net)
                times[(name, what)].append(time.perf_counter() - t0)
    print(f"shape {a.shape}, checkpointing {'on' if a.checkpoint else 'off'}, {a.threads} "
          f"thread(s), malloc {a.malloc}, median of {a.repeats} interleaved rounds")
    for what in ("fwd+bwd", "infer"):
        ref = statistics.median(times[(runs[0][0], what)])
        cells = [f"{name} {statistics.median(times[(name, what)]) * 1e3:7.1f} ms "
                 f"({ref / statistics.median(times[(name, what)]):.3f}x)" for name, _, _ in runs]
        print(f"  {what:<8} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
