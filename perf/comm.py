"""Bytes per processor layer: halo exchange vs an all-to-all head transpose.

A processor layer is sliding-window attention (window W) over N SFC-ordered hidden nodes of
width C, sharded over P ranks.
  halo      each rank receives the W/2 rows on each side of its shard (the normalised
            features, width C; keys and values are projected locally) — counted from the
            real halo plans (hpcds.distributed.window_plan): O(P·W·C) in total, independent
            of N and of the head count.
  all2all   Anemoi-style: q, k, v are transposed from node-sharded (N/P, H, d) to
            head-sharded (N, H/P, d) and the output back — 4 all-to-alls, each rank keeping
            1/P of its rows: 4·N·C·(P−1)/P in total, O(N), and only possible while P ≤ H.
Forward only (the backward moves the same bytes again, for both). bf16 (2 bytes/value), B = 1.

    python perf/comm.py                      # analytic table, P = 2…8, N = 10^4 … 2.6·10^7
Then the encoder/decoder/refiner graph halos of a preset's model (--preset, default tiny).

    python perf/comm.py --measure            # + a real gloo run at small P: counted bytes
                                             #   (must equal the plans') and times
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from hpcds.distributed import window_plan
from hpcds.grids import shard_ranges

ELEM = 2  # bf16


def halo_bytes(n: int, P: int, window: int, C: int) -> tuple[int, int]:
    """(total bytes sent by all ranks, max by one rank) for one layer's forward exchange."""
    ranges = shard_ranges(n, P)
    sent = [window_plan(ranges, r, window // 2).rows_sent * C * ELEM for r in range(P)]
    return sum(sent), max(sent)


def a2a_bytes(n: int, P: int, C: int, tensors: int = 4) -> tuple[int, int]:
    """(total, max per rank) bytes of `tensors` all-to-all transposes of (N, C)."""
    per = [tensors * (b - a) * C * (P - 1) // P * ELEM for a, b in shard_ranges(n, P)]
    return sum(per), max(per)


def fmt(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:7.1f} {unit}"
        b /= 1024


def analytic(ns, ps, window, C, heads) -> list[dict]:
    rows = []
    print(f"\nper processor layer, forward, bf16, B=1, C={C}, W={window}, H={heads}")
    print(f"{'N':>10} {'P':>2} | {'halo total':>11} {'halo/rank':>11} | "
          f"{'a2a total':>11} {'a2a/rank':>11} | {'a2a/halo':>9}")
    for n in ns:
        for P in ps:
            h_tot, h_max = halo_bytes(n, P, window, C)
            a_tot, a_max = a2a_bytes(n, P, C)
            note = "" if P <= heads else "  (a2a impossible: P > H)"
            print(f"{n:>10} {P:>2} | {fmt(h_tot)} {fmt(h_max)} | {fmt(a_tot)} {fmt(a_max)} | "
                  f"{a_tot / h_tot:9.0f}{note}")
            rows.append(dict(n=n, P=P, halo_total=h_tot, halo_max_rank=h_max, a2a_total=a_tot,
                             a2a_max_rank=a_max))
    return rows


def graph_halos(preset: str, ps, C: int) -> list[dict]:
    """Halo rows/bytes of the encoder/decoder/refiner graphs of a preset's model, from the
    real plans (hpcds.distributed.graph_shard over shard_ranges of HR and hidden nodes)."""
    from hpcds.config.load import load_config
    from hpcds.distributed import graph_shard
    from hpcds.grids import make_grid
    from hpcds.models import build_model_graphs
    cfg = load_config(preset)
    g = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    sizes = {"hr": g.n_hr, "hidden": g.n_hidden}
    spec = {"encoder": ("hr", "hidden"), "decoder": ("hidden", "hr"), "refiner": ("hr", "hr")}
    rows = []
    print(f"\ngraph halos of the {preset!r} model (N_hr={g.n_hr}, N_hidden={g.n_hidden}), "
          f"forward, bf16, C={C}: total rows sent (bytes), and as a share of the source set")
    for P in ps:
        parts = []
        for name, (src, dst) in spec.items():
            if not hasattr(g, f"{name}_senders"):
                continue
            s, r = (getattr(g, f"{name}_{k}").numpy() for k in ("senders", "receivers"))
            sr, dr = shard_ranges(sizes[src], P), shard_ranges(sizes[dst], P)
            sent = sum(graph_shard(s, r, sr, dr, q).plan.rows_sent for q in range(P))
            parts.append(f"{name} {sent:6d} ({fmt(sent * C * ELEM).strip()}, "
                         f"{100 * sent / sizes[src]:4.1f}%)")
            rows.append(dict(preset=preset, graph=name, P=P, rows_sent=sent,
                             bytes=sent * C * ELEM, source_nodes=sizes[src]))
        print(f"P={P}: " + "  ".join(parts))
    return rows


def _measure_rank(rank, P, n, C, window, reps, port, out):
    import torch.distributed as dist

    from hpcds.distributed import (CountingTransport, ShardContext, TorchP2PTransport,
                                   halo_exchange)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=P)
    ranges = shard_ranges(n, P)
    plan = window_plan(ranges, rank, window // 2)
    tr = CountingTransport(TorchP2PTransport())
    ctx = ShardContext(rank, P, None, tr)
    a, b = ranges[rank]
    h = torch.randn(1, b - a, C)
    halo_exchange(h, plan, ctx)  # warm-up, then count one layer
    tr.bytes_sent = 0
    halo_exchange(h, plan, ctx)
    counted = tr.bytes_sent // 2  # float32 on the wire here; table is bf16

    # all-to-all head transpose of q, k, v and back, padded to equal shards
    m = -(-n // (P * P)) * P  # rows per rank, a multiple of P (gloo's all-to-all)
    x = torch.randn(m, C)
    recv = torch.empty_like(x)

    def a2a():
        for _ in range(4):
            dist.all_to_all_single(recv, x)

    def halo():
        halo_exchange(h, plan, ctx)

    times = {}
    for name, fn in (("halo", halo), ("a2a", a2a)):
        fn()
        ts = []
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        times[name] = statistics.median(ts)
    gathered = [None] * P
    dist.all_gather_object(gathered, (counted, times))
    if rank == 0:
        out.put(gathered)
    dist.destroy_process_group()


def measure(ps, n, C, window, reps) -> list[dict]:
    import socket

    import torch.multiprocessing as mp
    rows = []
    print(f"\nmeasured on gloo (this machine), N={n}, C={C}, W={window}; bytes as bf16; "
          f"median of {reps}")
    ctx = mp.get_context("spawn")
    for P in ps:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        q = ctx.Queue()
        procs = [ctx.Process(target=_measure_rank, args=(r, P, n, C, window, reps, port, q))
                 for r in range(P)]
        for p in procs:
            p.start()
        gathered = None
        while gathered is None:
            try:
                gathered = q.get(timeout=1)
            except Exception:  # queue.Empty: check that no rank died
                if any(p.exitcode not in (None, 0) for p in procs):
                    for p in procs:
                        p.kill()
                    raise RuntimeError(f"a rank failed at P={P}") from None
        for p in procs:
            p.join()
        counted = sum(c for c, _ in gathered)
        h_tot, _ = halo_bytes(n, P, window, C)
        assert counted == h_tot, (counted, h_tot)
        t_halo = max(t["halo"] for _, t in gathered)
        t_a2a = max(t["a2a"] for _, t in gathered)
        print(f"P={P}: halo bytes counted {fmt(counted)} == plans {fmt(h_tot)}; "
              f"time/layer halo {t_halo * 1e3:.2f} ms, a2a {t_a2a * 1e3:.2f} ms")
        rows.append(dict(P=P, n=n, halo_counted=counted, halo_ms=t_halo * 1e3,
                         a2a_ms=t_a2a * 1e3))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--preset", default="tiny", help="model whose graph halos are counted")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--measure-n", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--record", action="store_true", help="write perf/results/comm-<date>.json")
    args = ap.parse_args(argv)
    ns = [10_000, 100_000, 1_000_000, 26_306_560]
    rows = analytic(ns, range(2, 9), args.window, args.channels, args.heads)
    rows += graph_halos(args.preset, range(2, 9), args.channels)
    measured = measure([2, 3, 4], args.measure_n, 64, args.window, args.reps) \
        if args.measure else []
    if args.record:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from machine import write_record
        write_record("comm", rows + measured, window=args.window, channels=args.channels,
                     heads=args.heads)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
