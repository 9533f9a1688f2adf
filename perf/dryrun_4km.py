"""CPU dry run of the 4.4 km config (issue 7): configs/4km.yaml (HR O2560 = 26,306,560 cells,
LR O320, hidden O1280) at reduced width on 4 local ranks, one training step and one sampler
step. How long each phase takes and the peak RSS of every rank are recorded, not asserted.

    nice -n 10 .venv/bin/python perf/dryrun_4km.py --record        # every phase
    nice -n 10 .venv/bin/python perf/dryrun_4km.py --phases train,sample

Phases (each a child process tree, watched from here):
  data     the benchmark stores (3 dates, 16 noise modes, 65,536-cell chunks) under
           runs/4km/data, reused when present
  prepare  the caches the ranks then only read: the O2560/O1280 grids (memory-mapped .npy)
           and, for every shard of the training and the sampling HR ranges, its model
           graphs (hpcds.models.shard_graphs) and interpolation rows; `--workers` shards at
           a time, one process per shard (a shard build holds ~3 GiB)
  train    torchrun --standalone --nproc_per_node=4 -m hpcds.cli.main train 4km … steps=1
  sample   torchrun … sample 4km … sampling.steps=1 sampling.members=1
A watcher samples every process's RSS (VmRSS and RssAnon from /proc) each 0.5 s: the peak
per process (per rank under torchrun), the peak of the sums, and the time line (s, RSS,
anonymous GiB) go into the record. If the anonymous sum (file pages, i.e. the memory-mapped
grid cache, are shared by the ranks) exceeds --mem-limit-gib, the phase is stopped (the
machine is shared) and the record says where it was: every process gets SIGABRT first,
so each rank's Python stack (faulthandler) is in the phase's log. `--record` writes perf/results/dryrun-4km-<date>.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_record  # noqa: E402  (perf/machine.py)

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
OUT = "runs/4km"
DATA = [f"run.out_dir={OUT}", "benchmark.n_dates=3", "benchmark.noise_modes=16",
        "benchmark.chunk_cells=65536"]
# reduced width: 2 channels (1 head), MLPs of ratio 1, 2 processor layers of window 16; the
# grids, the graphs (k = 4, 4, 8) and activation checkpointing are configs/4km.yaml's. What
# is left per rank at P = 4 (6.58 M HR rows) is independent of the width: graph indices,
# edge-bias pieces, the attention backward's per-edge workspace, data, inputs
# graph_block_rows=0: as recorded in dryrun-4km-20261125.md (before the config's pieces)
MODEL = ["model.hidden_dim=2", "model.num_heads=1", "model.mlp_ratio=1",
         "model.processor_layers=2", "model.window=16", "model.noise_embedding_dim=16",
         "model.graph_block_rows=0",
         "model.backend=native"]
PARALLEL = ["parallel.ensemble_groups=0", "parallel.use_deepspeed=false", "parallel.zero_stage=0",
            "parallel.halo_transport=torch"]
TRAIN = ["training.steps=1", "training.val_dates=1", "training.val_every=0",
         "training.checkpoint_every=1", "training.log_every=1", "training.resume=false",
         f"training.run_dir={OUT}/dryrun-train"]
SAMPLE = ["sampling.steps=1", "sampling.members=1", "sampling.members_per_batch=1",
          f"sampling.checkpoint={OUT}/dryrun-train/latest.pt",
          f"sampling.output={OUT}/dryrun-ensemble.zarr", "data.start_date=2026-01-01T12:00"]


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) KiB of pid: RssAnon leaves out file pages (the memory-mapped grid
    cache), which the ranks share."""
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "RssAnon:")):
                found[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return found.get("VmRSS", 0), found.get("RssAnon", 0)


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return ""


def run_watched(name: str, cmd: list[str], limit_gib: float, log: Path,
                env: dict | None = None) -> dict:
    """Run cmd (its own process group), sampling the RSS of its process tree; stop it if
    the tree's total RSS exceeds limit_gib. Returns the phase's row."""
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1",
                                     "PYTHONFAULTHANDLER": "1", **(env or {})},
                                start_new_session=True)
    peaks: dict[int, int] = {}
    anon_peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    timeline, state = [], {"total_peak": 0, "anon_peak": 0, "killed": None}

    def watch():
        while proc.poll() is None:
            pids = _tree(proc.pid)
            both = {p: _rss_kib(p) for p in pids}
            rss = {p: r for p, (r, _) in both.items()}
            total = sum(rss.values())
            anon = sum(a for _, a in both.values())
            for p, (r, a) in both.items():
                if r > peaks.get(p, 0):
                    peaks[p] = r
                    names.setdefault(p, _cmdline(p))
                anon_peaks[p] = max(anon_peaks.get(p, 0), a)
            state["total_peak"] = max(state["total_peak"], total)
            state["anon_peak"] = max(state["anon_peak"], anon)
            timeline.append((round(time.perf_counter() - t0, 1), round(total / 2**20, 2),
                             round(anon / 2**20, 2)))
            # the limit is on anonymous memory: file pages (the grid cache) are shared
            if anon > limit_gib * 2**20 and state["killed"] is None:
                state["killed"] = {"at_s": round(time.perf_counter() - t0, 1),
                                   "total_rss_gib": round(total / 2**20, 2),
                                   "total_anon_gib": round(anon / 2**20, 2),
                                   "per_process_rss_gib": {p: round(r / 2**20, 2)
                                                           for p, r in rss.items() if r}}
                # SIGABRT first: with PYTHONFAULTHANDLER every Python process prints
                # where it is (its stack) to the log, then the group is killed
                for p in pids:
                    try:
                        os.kill(p, signal.SIGABRT)
                    except OSError:
                        pass
                time.sleep(2.0)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rc = proc.wait()
    watcher.join()
    wall = time.perf_counter() - t0
    # per process: the python processes (ranks, workers); torchrun's agent is small
    procs = [{"pid": p, "peak_rss_gib": round(k / 2**20, 2),
              "peak_anon_gib": round(anon_peaks.get(p, 0) / 2**20, 2), "cmd": names.get(p, "")}
             for p, k in sorted(peaks.items()) if k > 50 * 1024]
    row = {"phase": name, "command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 1),
           "peak_total_rss_gib": round(state["total_peak"] / 2**20, 2),
           "peak_total_anon_gib": round(state["anon_peak"] / 2**20, 2),
           "processes": procs, "killed_over_limit": state["killed"],
           "timeline_gib": timeline[::max(1, len(timeline) // 200)], "log": str(log)}
    print(f"[{name}] rc={rc} wall={wall:.1f}s peak total RSS {row['peak_total_rss_gib']} "
          f"GiB (anonymous {row['peak_total_anon_gib']}); per process "
          f"{[p['peak_rss_gib'] for p in procs]}", flush=True)
    return row


# ---------------------------------------------------------------------- prepare (one shard)
def prepare_shard(kind: str, rank: int, P: int) -> None:
    """Child process: build (into the caches) shard `rank` of P of the `kind` ("train" or
    "sample") HR ranges: its model graphs and its interpolation rows."""
    import resource

    import numpy as np

    from hpcds.config.load import load_config
    from hpcds.ensemble.parallel import chunk_aligned_ranges
    from hpcds.grids import cached_interpolation_matrix, grid_point_count, shard_ranges
    from hpcds.grids.grid_cache import cached_grid
    from hpcds.models.shard_graphs import longest_edges, shard_graph_parts

    cfg = load_config("4km", DATA + MODEL)
    cache = cfg.grid.cache_dir
    t0 = time.perf_counter()
    hr, lr = cached_grid(cfg.grid.hr, cache), cached_grid(cfg.grid.lr, cache)
    hidden = cached_grid(cfg.model.hidden_grid, cache)
    t_grid = time.perf_counter() - t0
    n = hr.size
    ranges = (shard_ranges(n, P) if kind == "train" else chunk_aligned_ranges(n, P)[1])
    hid = shard_ranges(grid_point_count(cfg.model.hidden_grid), P)[rank]
    t1 = time.perf_counter()
    parts = shard_graph_parts(cfg.model, hr, hidden, ranges[rank], hid, cache)
    t_graph = time.perf_counter() - t1
    edges = {k: g.num_edges for k, g in parts.items()}
    longest = longest_edges(parts)
    del parts
    t2 = time.perf_counter()
    cached_interpolation_matrix(lr, hr, rows=ranges[rank], cache_dir=cache)
    t_interp = time.perf_counter() - t2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"PREPARED kind={kind} rank={rank} hr={ranges[rank]} hidden={hid} edges={edges} "
          f"longest={np.round(longest, 6).tolist()} grids_s={t_grid:.1f} "
          f"graphs_s={t_graph:.1f} interp_s={t_interp:.1f} peak_rss_gib={peak:.2f}",
          flush=True)


def prepare(args, logs: Path) -> list[dict]:
    """Grids first (one process: the O2560 build peaks at ~4.8 GiB), then the shards,
    `args.workers` at a time."""
    rows = [run_watched("prepare-grids",
                        [PY, __file__, "--prepare-grids"], args.mem_limit_gib,
                        logs / "prepare-grids.log")]
    jobs = [(k, r) for k in ("train", "sample") for r in range(args.ranks)]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not jobs:
                    return
                kind, r = jobs.pop(0)
            row = run_watched(f"prepare-{kind}-{r}",
                              [PY, __file__, "--prepare-shard", kind, str(r), str(args.ranks)],
                              args.mem_limit_gib / args.workers,
                              logs / f"prepare-{kind}-{r}.log")
            text = Path(row["log"]).read_text()
            row["result"] = [ln for ln in text.splitlines() if ln.startswith("PREPARED")]
            with lock:
                rows.append(row)

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rows


def prepare_grids() -> None:
    import resource

    from hpcds.config.load import load_config
    from hpcds.grids.grid_cache import cached_grid

    cfg = load_config("4km", DATA + MODEL)
    for g in (cfg.grid.hr, cfg.model.hidden_grid, cfg.grid.lr):
        t = time.perf_counter()
        grid = cached_grid(g, cfg.grid.cache_dir)
        print(f"GRID {grid.name} {grid.size} cells {time.perf_counter() - t:.1f}s peak "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
              flush=True)


def rank_budget(P: int) -> None:
    """Child process: what rank 0 of P holds before and during its first forward, measured
    piece by piece in ONE process (no collectives: the length scales are this shard's own,
    which changes no array size). Prints BUDGET lines: (step, seconds, RSS, anonymous GiB)."""
    import torch

    from hpcds.config.load import load_config
    from hpcds.data.paired import PairedDataset
    from hpcds.grids import grid_point_count, shard_ranges
    from hpcds.models import DownscalerNet
    from hpcds.models.shard_graphs import build_shard_graphs
    from hpcds.nn.layers import EdgeBias

    def mark(step, t0, **extra):
        rss, anon = _rss_kib(os.getpid())
        print(f"BUDGET {step} s={time.perf_counter() - t0:.1f} rss_gib={rss / 2**20:.2f} "
              f"anon_gib={anon / 2**20:.2f} {extra}", flush=True)

    torch.set_num_threads(1)
    cfg = load_config("4km", DATA + MODEL + TRAIN)
    n = grid_point_count(cfg.grid.hr)
    hr_range = shard_ranges(n, P)[0]
    hid_range = shard_ranges(grid_point_count(cfg.model.hidden_grid), P)[0]
    t = time.perf_counter()
    mark("start", t)
    ds = PairedDataset.from_config(cfg, hr_cells=hr_range)
    mark("dataset", t)
    t = time.perf_counter()
    ds.set_normalisation(ds.residual_statistics())
    sample = ds[0]
    mark("statistics + one sample", t, bytes_gib=round(sum(
        v.nbytes for v in sample.values() if hasattr(v, "nbytes")) / 2**30, 3))
    t = time.perf_counter()
    graphs = build_shard_graphs(cfg.model, ds.hr_grid, hr_range, hid_range,
                                cfg.grid.cache_dir, reduce_max=lambda x: x)
    edges = {k: int(getattr(graphs, f"{k}_senders").numel())
             for k in ("encoder", "decoder", "refiner")}
    mark("graphs loaded (cache)", t, edges=edges)
    t = time.perf_counter()
    net = DownscalerNet(cfg.model, len(ds.variables), sample["forcings"].shape[0], graphs)
    del graphs
    mark("model built", t, parameters=sum(p.numel() for p in net.parameters()))
    # the largest per-edge activation: the refiner's edge-bias MLP (E, 32) twice (Linear,
    # SiLU), measured on 1/16 of its edges under no_grad and scaled
    bias = EdgeBias(3, cfg.model.num_heads)
    attr = net.refiner_edge_attr
    part = attr[: attr.shape[0] // 16]
    t = time.perf_counter()
    before = _rss_kib(os.getpid())[1]
    peak = [before]
    stop = threading.Event()

    def sample_rss():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kib(os.getpid())[1])
            time.sleep(0.01)

    th = threading.Thread(target=sample_rss, daemon=True)
    th.start()
    with torch.no_grad():
        x = bias.mlp[0](part)
        y = bias.mlp[1](x)
        del x
        out = bias.mlp[2](y)
        del y, out
    stop.set()
    th.join()
    extra_gib = (peak[0] - before) / 2**20
    mark("edge bias on 1/16 of the refiner edges", t, extra_gib=round(extra_gib, 3),
         scaled_to_all_edges_gib=round(16 * extra_gib, 2),
         exact_linear_plus_silu_gib=round(2 * attr.shape[0] * 32 * 4 / 2**30, 2))
    # the same MLP in EdgeBias.CHUNK pieces (what the model now runs): all refiner edges,
    # forward without autograd (sampling), then forward + backward (training)
    bias.chunk = EdgeBias.CHUNK
    for grad in (False, True):
        stop.clear()
        before = peak[0] = _rss_kib(os.getpid())[1]
        th = threading.Thread(target=sample_rss, daemon=True)
        th.start()
        t = time.perf_counter()
        with torch.set_grad_enabled(grad):
            out = bias(attr)
            if grad:
                out.square().sum().backward()
            del out
        stop.set()
        th.join()
        mark(f"edge bias in pieces of {EdgeBias.CHUNK}, all {attr.shape[0]} refiner edges, "
             f"{'forward + backward' if grad else 'forward, no autograd'}", t,
             extra_gib=round((peak[0] - before) / 2**20, 3))
    n_local = hr_range[1] - hr_range[0]
    C = cfg.model.hidden_dim
    print("BUDGET per-HR-row tensors (1, n_local, C) float32:",
          round(n_local * C * 4 / 2**30, 3), "GiB; MLP hidden (mlp_ratio):",
          round(n_local * C * cfg.model.mlp_ratio * 4 / 2**30, 3), "GiB", flush=True)


# glibc: allocations of 1 MiB or more are mmapped and go back to the system when freed (by
# default the threshold grows with the largest block freed, up to 32 MiB, and blocks below it
# come from heaps that fragment, holding freed memory)
RANK_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def cli(command: str, extra: list[str], ranks: int) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "torchrun"), "--standalone",
            f"--nproc_per_node={ranks}", "-m", "hpcds.cli.main", command, "4km",
            *DATA, *MODEL, *PARALLEL, f"parallel.model_parallel={ranks}", *extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", default="data,prepare,train,sample")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="prepare: shards built at once")
    ap.add_argument("--mem-limit-gib", type=float, default=22.0,
                    help="stop a phase whose processes' anonymous memory passes this")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--prepare-shard", nargs=3, metavar=("KIND", "RANK", "P"))
    ap.add_argument("--prepare-grids", action="store_true")
    ap.add_argument("--rank-budget", action="store_true")
    args = ap.parse_args()
    if args.prepare_shard:
        kind, r, P = args.prepare_shard
        return prepare_shard(kind, int(r), int(P))
    if args.prepare_grids:
        return prepare_grids()
    if args.rank_budget:
        return rank_budget(args.ranks)

    logs = ROOT / OUT / "dryrun-logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    phases = args.phases.split(",")
    if "data" in phases:
        if (ROOT / OUT / "data" / "hr.zarr").exists():
            rows.append({"phase": "data", "reused": f"{OUT}/data"})
        else:
            rows.append(run_watched("data", [PY, "-m", "hpcds.cli.main", "data", "benchmark",
                                             "4km", *DATA, "--quiet"],
                                    args.mem_limit_gib, logs / "data.log"))
    if "prepare" in phases:
        rows += prepare(args, logs)
    if "budget" in phases:
        row = run_watched("budget", [PY, __file__, "--rank-budget", "--ranks",
                                     str(args.ranks)], args.mem_limit_gib, logs / "budget.log")
        row["result"] = [ln for ln in Path(row["log"]).read_text().splitlines()
                         if ln.startswith("BUDGET")]
        rows.append(row)
    if "train" in phases:
        rows.append(run_watched("train", cli("train", TRAIN, args.ranks),
                                args.mem_limit_gib, logs / "train.log", env=RANK_ENV))
    if "sample" in phases:
        rows.append(run_watched("sample", cli("sample", SAMPLE + ["--overwrite"], args.ranks),
                                args.mem_limit_gib, logs / "sample.log", env=RANK_ENV))
    print(machine_info())
    if args.record:
        write_record("dryrun-4km", rows, tag=f"-{'-'.join(phases)}")


if __name__ == "__main__":
    main()
