"""Timings of the data layer: grid construction (SFC order), per-shard graphs and
interpolation rows, benchmark generation and a full `data check`.

    .venv/bin/python perf/bench_data.py                 # default sizes (~2 min on 2 cores)
    .venv/bin/python perf/bench_data.py --hr O1280 --shards 16 --record

Prints a table; `--record` also writes perf/results/data-<date>.json with the machine noted.
Times are wall-clock medians of `--repeat` runs; peak RSS is the process maximum so far.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from machine import peak_rss_gib, write_record  # perf/machine.py

from hpcds.cli.main import main as hpcds_main
from hpcds.config.schema import GridConfig
from hpcds.grids import octahedral
from hpcds.grids import (gaussian_latitudes, interpolation_matrix, knn_graph, make_grid,
                         shard_ranges)


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(args) -> list[dict]:
    rows = []

    def record(what, seconds, **extra):
        rows.append({"what": what, "seconds": round(seconds, 4),
                     "peak_rss_gib": round(peak_rss_gib(), 2), **extra})
        print(f"{what:<52}{seconds:>10.3f} s  {extra if extra else ''}", flush=True)

    n_lat = 2 * int(args.hr[1:]) if args.hr.startswith("O") else 5120
    def cold_gaussian():  # the roots are cached after the first call: time the computation
        octahedral._gaussian_latitudes.cache_clear()
        return gaussian_latitudes(n_lat)

    seconds, _ = timed(cold_gaussian, args.repeat)
    record(f"gaussian_latitudes({n_lat})", seconds)

    seconds, lr = timed(lambda: make_grid(GridConfig(name=args.lr)), args.repeat)
    record(f"make_grid {args.lr} (SFC order)", seconds, points=lr.size)
    seconds, hr = timed(lambda: make_grid(GridConfig(name=args.hr)), 1)
    record(f"make_grid {args.hr} (SFC order)", seconds, points=hr.size)

    shard = shard_ranges(hr.size, args.shards)[args.shards // 2]
    seconds, graph = timed(lambda: knn_graph(lr, hr, 4, dst_range=shard), 1)
    record(f"knn_graph {args.lr}->{args.hr} k=4, 1 of {args.shards} shards", seconds,
           edges=graph.num_edges)
    seconds, matrix = timed(lambda: interpolation_matrix(lr, hr, rows=shard), 1)
    record(f"interpolation rows {args.lr}->{args.hr}, 1 of {args.shards} shards", seconds,
           nnz=int(matrix.nnz))

    with tempfile.TemporaryDirectory() as tmp:
        common = ["tiny", f"run.out_dir={tmp}", "--quiet"]
        seconds, code = timed(lambda: hpcds_main(["data", "benchmark", *common, "--overwrite"]),
                              1)
        record("hpcds data benchmark tiny (40 dates)", seconds, exit=code)
        seconds, code = timed(lambda: hpcds_main(["data", "check", *common]), 1)
        record("hpcds data check tiny", seconds, exit=code)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", default="O96")
    parser.add_argument("--hr", default="O320")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action="store_true",
                        help="write perf/results/data-<date>.json")
    args = parser.parse_args()
    rows = run(args)
    if args.record:
        write_record("data", rows, tag=f"-{args.hr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
