"""Sharded graph building at 4.4 km: the per-shard pieces one rank of a P-way model needs.

    nice -n 10 .venv/bin/python perf/bench_graph.py configs/4km.yaml --shards 16 --record

For each of the P contiguous SFC shards of the HR grid (default O2560, 26.3 M cells) it builds,
through the graph cache (`grid.cache_dir` of the config; a second run only loads):
  decoder   kNN hidden → HR for the shard's HR cells (`knn_graph(hidden, hr, k, dst_range)`),
  interp    the shard's rows of the LR → HR interpolation matrix,
and measures wall time and the peak resident memory DURING that shard (the kernel's VmHWM is
reset before each shard through /proc/self/clear_refs, so it is per shard, not a running
maximum). From the decoder edges it also derives what the model-parallel layout will need:
the encoder edges per hidden shard (the encoder is the transpose of the same kNN graph when
encoder_knn == decoder_knn) and the halo rows, i.e. the source rows a shard reads from other
shards (decoder: hidden nodes outside the shard's hidden range; encoder: HR cells outside it).

`--time-limit S` stops after S seconds and extrapolates the rest (labelled as such).
Prints a markdown table; `--record` writes perf/results/graph-<hr>-<date>.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from machine import write_record  # perf/machine.py

from hpcds.config.load import load_config
from hpcds.grids import cached_graph, cached_interpolation_matrix, knn_graph, make_grid
from hpcds.grids import shard_ranges
from hpcds.grids.cache import stable_hash

GIB = 2**30


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_gib() -> float:
    """Peak RSS since the last `reset_peak()` (or process start), GiB."""
    try:
        return _status_kib("VmHWM") / 2**20
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gib() -> float:
    return _status_kib("VmRSS") / 2**20


def cache_file_exists(cache_dir: Path, kind: str, params: dict) -> bool:
    """Whether `cached_arrays(kind, params, ...)` will hit (same naming as hpcds.grids.cache)."""
    key = stable_hash({"kind": kind, "params": params})
    return (cache_dir / f"{kind}-{key[:24]}.npz").exists()


def run(args) -> tuple[list[dict], dict]:
    cfg = load_config(args.config, args.overrides)
    cache_dir = Path(args.cache_dir or cfg.grid.cache_dir)
    P, k = args.shards, int(cfg.model.decoder_knn)
    setup = {}
    t0 = time.perf_counter()
    hr = make_grid(cfg.grid.hr)
    setup["make_grid_hr_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    hidden = make_grid(cfg.model.hidden_grid)
    lr = make_grid(cfg.grid.lr)
    setup["make_grid_hidden_lr_s"] = round(time.perf_counter() - t0, 2)
    setup.update(hr=hr.name, n_hr=hr.size, hidden=hidden.name, n_hidden=hidden.size,
                 lr=lr.name, n_lr=lr.size, shards=P, k=k, cache_dir=str(cache_dir),
                 rss_after_grids_gib=round(rss_gib(), 2))
    print(f"grids: HR {hr.name} {hr.size:,} ({setup['make_grid_hr_s']} s), hidden "
          f"{hidden.name} {hidden.size:,}, LR {lr.name} {lr.size:,}; RSS "
          f"{setup['rss_after_grids_gib']} GiB; cache {cache_dir}", flush=True)

    hr_ranges = shard_ranges(hr.size, P)
    hid_ranges = shard_ranges(hidden.size, P)
    hid_starts = np.array([a for a, _ in hid_ranges])
    enc_edges = np.zeros(P, dtype=np.int64)  # encoder edges received per hidden shard
    enc_halo = np.zeros(P, dtype=np.int64)  # HR rows a hidden shard reads from other shards
    rows, start_all = [], time.perf_counter()
    for p, (a, b) in enumerate(hr_ranges):
        if args.time_limit and time.perf_counter() - start_all > args.time_limit:
            print(f"time limit {args.time_limit} s reached after {p} shards", flush=True)
            break
        dec_params = {"src": hidden, "dst": hr, "k": k, "dst_range": (a, b)}
        hit_dec = cache_file_exists(cache_dir, "graph-knn", dec_params)
        hit_int = cache_file_exists(cache_dir, "interp",
                                    {"src": lr, "dst": hr, "rows": (a, b)})
        base = rss_gib()
        reset_peak()
        t0 = time.perf_counter()
        graph = cached_graph("knn", dec_params,
                             lambda: knn_graph(hidden, hr, k, dst_range=(a, b)), cache_dir)
        t_dec = time.perf_counter() - t0
        t0 = time.perf_counter()
        matrix = cached_interpolation_matrix(lr, hr, rows=(a, b), cache_dir=cache_dir)
        t_int = time.perf_counter() - t0
        peak = peak_gib()

        # layout facts from the decoder edges (hidden sender i → HR receiver j)
        q = np.searchsorted(hid_starts, graph.senders, side="right") - 1  # hidden shard of i
        lo, hi = hid_ranges[p]
        dec_halo = np.unique(graph.senders[(graph.senders < lo) | (graph.senders >= hi)]).size
        enc_edges += np.bincount(q, minlength=P)
        foreign = q != p  # encoder edges into hidden shard q whose HR source j lies in shard p
        pairs = np.unique(q[foreign] * np.int64(hr.size) + graph.receivers[foreign])
        enc_halo += np.bincount(pairs // hr.size, minlength=P)
        row = {"shard": p, "hr_range": [a, b], "decoder_edges": graph.num_edges,
               "decoder_s": round(t_dec, 2), "decoder_cached": hit_dec,
               "interp_nnz": int(matrix.nnz), "interp_s": round(t_int, 2),
               "interp_cached": hit_int, "rss_before_gib": round(base, 2),
               "peak_rss_gib": round(peak, 2), "peak_above_before_gib": round(peak - base, 2),
               "decoder_halo_hidden_rows": int(dec_halo)}
        rows.append(row)
        print(f"shard {p:>2}/{P}: decoder {graph.num_edges:,} edges {t_dec:6.1f} s"
              f"{' (cache)' if hit_dec else ''}, interp {matrix.nnz:,} nnz {t_int:6.1f} s"
              f"{' (cache)' if hit_int else ''}, peak {peak:.2f} GiB (+{peak - base:.2f}), "
              f"decoder halo {dec_halo:,} hidden rows", flush=True)
        del graph, matrix, q, pairs
    done = len(rows)
    if done == P:
        for row in rows:
            row["encoder_edges"] = int(enc_edges[row["shard"]])
            row["encoder_halo_hr_rows"] = int(enc_halo[row["shard"]])
    setup["shards_done"] = done
    setup["loop_s"] = round(time.perf_counter() - start_all, 1)
    if 0 < done < P:
        setup["extrapolated_all_shards_s"] = round(setup["loop_s"] * P / done, 1)
    return rows, setup


def markdown(rows: list[dict], setup: dict) -> str:
    lines = ["| shard | HR cells | decoder edges | decoder s | interp nnz | interp s | "
             "peak RSS GiB (+ above grids) | decoder halo (hidden rows) | encoder edges | "
             "encoder halo (HR rows) |", "|" + "---:|" * 10]
    for r in rows:
        a, b = r["hr_range"]
        cached = " (cache)" if r["decoder_cached"] else ""
        lines.append(
            f"| {r['shard']} | {b - a:,} | {r['decoder_edges']:,} | {r['decoder_s']}{cached} | "
            f"{r['interp_nnz']:,} | {r['interp_s']}{' (cache)' if r['interp_cached'] else ''} | "
            f"{r['peak_rss_gib']} (+{r['peak_above_before_gib']}) | "
            f"{r['decoder_halo_hidden_rows']:,} | {r.get('encoder_edges', '—'):,} | "
            f"{r.get('encoder_halo_hr_rows', '—'):,} |")
    return "\n".join(lines)


def shard_bench_parser(doc: str) -> argparse.ArgumentParser:
    """CONFIG [key=value …] --shards P: the arguments of the per-shard graph benchmarks."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="4km")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--shards", type=int, default=16)
    return parser


def main() -> int:
    parser = shard_bench_parser(__doc__)
    parser.add_argument("--cache-dir", default=None, help="default: the config's grid.cache_dir")
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="stop after this many seconds of shard building (0: no limit)")
    parser.add_argument("--record", action="store_true",
                        help="write perf/results/graph-<hr>-<date>.json")
    args = parser.parse_args()
    rows, setup = run(args)
    print(markdown(rows, setup))
    if args.record:
        cached = all(r["decoder_cached"] and r["interp_cached"] for r in rows)
        write_record("graph", rows, tag=f"-{setup['hr'].lower()}" + ("-cached" if cached else ""),
                     setup=setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
