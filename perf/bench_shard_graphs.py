"""The model graphs ONE model-parallel rank builds at 4.4 km, for every rank of P.

    nice -n 10 .venv/bin/python perf/bench_shard_graphs.py 4km --shards 16 --record

For each shard p of P (HR range p of O2560 and hidden range p of O1280, as the trainer assigns
them) it builds what `hpcds.models.shard_graphs.shard_graph_parts` builds for that rank —
  encoder  HR → hidden, the edges into the shard's hidden nodes (the cap-filtered transposed
           kNN; only HR chunks that can reach the range are queried),
  decoder  hidden → HR, the shard's HR rows (kNN, k = decoder_knn),
  refiner  HR → HR, the shard's HR rows (kNN over the 26 M HR cells, k = refiner_knn),
timing each, and the peak resident memory during the shard (VmHWM reset before it). The grids
come from the memory-mapped grid cache (`grid.cache_dir`; built there on first use). Graphs are
NOT cached unless `--cache-dir` is given (the P = 16 graphs take ~12 GB of disk); the graph
cache's reuse is what `perf/bench_graph.py` measures. Prints a markdown table; `--record`
writes perf/results/shard-graphs-<hr>-p<P>-<date>.json.
"""

from __future__ import annotations

import sys
import time

from bench_graph import peak_gib, reset_peak, rss_gib, shard_bench_parser  # perf/
from machine import write_record  # perf/machine.py

from hpcds.config.load import load_config
from hpcds.grids import cached_graph, shard_ranges
from hpcds.grids.grid_cache import cached_grid
from hpcds.models.shard_graphs import part_specs

PARTS = ("encoder", "decoder", "refiner")


def run(args) -> tuple[list[dict], dict]:
    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    hr = cached_grid(cfg.grid.hr, cfg.grid.cache_dir)
    hidden = cached_grid(cfg.model.hidden_grid, cfg.grid.cache_dir)
    P = args.shards
    setup = {"hr": hr.name, "n_hr": hr.size, "hidden": hidden.name, "n_hidden": hidden.size,
             "shards": P, "k": {p: int(getattr(cfg.model, f"{p}_knn")) for p in PARTS},
             "grids_s": round(time.perf_counter() - t0, 1), "graph_cache": args.cache_dir,
             "rss_after_grids_gib": round(rss_gib(), 2)}
    print(f"grids {hr.name} {hr.size:,} / {hidden.name} {hidden.size:,} in "
          f"{setup['grids_s']} s (cache {cfg.grid.cache_dir})", flush=True)
    rows, start = [], time.perf_counter()
    for p, (hr_range, hid_range) in enumerate(zip(shard_ranges(hr.size, P),
                                                  shard_ranges(hidden.size, P))):
        if p not in args.only and args.only:
            continue
        base = rss_gib()
        reset_peak()
        row = {"shard": p, "hr_range": list(hr_range), "hidden_range": list(hid_range)}
        for name, (builder, params, build) in part_specs(cfg.model, hr, hidden, hr_range,
                                                          hid_range).items():
            t = time.perf_counter()
            graph = cached_graph(builder, params, build, args.cache_dir)
            row[f"{name}_s"] = round(time.perf_counter() - t, 1)
            row[f"{name}_edges"] = graph.num_edges
            row[f"{name}_longest_rad"] = float(graph.edge_attr[:, 2].max())
            del graph
        row["peak_rss_gib"] = round(peak_gib(), 2)
        row["peak_above_before_gib"] = round(row["peak_rss_gib"] - base, 2)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    setup["loop_s"] = round(time.perf_counter() - start, 1)
    return rows, setup


def markdown(rows: list[dict]) -> str:
    lines = ["| shard | HR cells | encoder edges | s | decoder edges | s | refiner edges | s | "
             "peak RSS GiB (+ above start) |", "|" + "---:|" * 9]
    for r in rows:
        a, b = r["hr_range"]
        lines.append(f"| {r['shard']} | {b - a:,} | " + " | ".join(
            f"{r[f'{n}_edges']:,} | {r[f'{n}_s']}" for n in PARTS)
            + f" | {r['peak_rss_gib']} (+{r['peak_above_before_gib']}) |")
    return "\n".join(lines)


def main() -> int:
    parser = shard_bench_parser(__doc__)
    parser.add_argument("--only", type=int, nargs="*", default=[],
                        help="build only these shards (default: all)")
    parser.add_argument("--cache-dir", default=None,
                        help="graph cache to build into (default: none, nothing written)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows, setup = run(args)
    print(markdown(rows))
    print(f"{len(rows)} shards in {setup['loop_s']} s")
    if args.record:
        write_record("shard-graphs", rows, tag=f"-{setup['hr'].lower()}-p{setup['shards']}",
                     setup=setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
