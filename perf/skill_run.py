"""One skill experiment: the demo pipeline with overrides, per-variable figures against the goal.

    .venv/bin/python perf/skill_run.py --out runs/x --data-from runs/demo diffusion.P_mean=-2
    .venv/bin/python perf/skill_run.py --out runs/y --config demo benchmark.seed=7   # new data

Trains the diffusion model (not the deterministic baseline: it does not change between
experiments), samples the held-out dates and evaluates them against the truth, the
interpolation and the oracle. `--data-from DIR` reuses a run's benchmark stores (DIR/data;
the benchmark settings must be the same). Prints the demo's summary and, per variable, the
figures issue 12 sets goals for: CRPS / oracle CRPS (≤ 1.20 each, ≤ 1.10 mean), the spectral
ratio at high wavenumbers ([0.8, 1.25]) and the worst bin above the LR Nyquist (no ×2; beside
it the oracle's own worst bin, the measurement's noise with this many dates and members),
spread/skill ([0.9, 1.1]) and the tp q0.999 / q0.9999 ratios to the truth (±10 %).
Writes OUT/skill.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from hpcds.config.load import load_config
from hpcds.data.paired import PairedDataset
from hpcds.evaluate.baselines import make_oracle
from hpcds.pipeline import held_out_config, run_pipeline


def per_variable(result: dict) -> dict:
    """{variable: figures} of the first forecast source, region 0."""
    src = result["sources"][0]
    region = result["regions"][0]
    spec = result["spectra"]
    q = result["extremes"]["quantiles"]
    out = {}
    for v in result["variables"]:
        row = {"crps_ratio": result["crps_ratio_to_oracle"][src][v],
               "high_k_ratio": spec["high_k_ratio"][src][v],
               "worst_bin_above_lr_nyquist": spec["worst_bin"][src][v],
               # the same figure for the exact law's draws: how far a perfect model's bins
               # stray from the truth's with this many dates and members (the estimate's noise)
               "oracle_worst_bin": spec["worst_bin"].get("oracle", {}).get(v, math.nan),
               # the forecast against the law itself (its oracle draws), not one draw of it
               "high_k_over_oracle": spec["high_k_over_oracle"].get(src, {}).get(v, math.nan),
               "worst_bin_over_oracle":
                   spec["worst_bin_over_oracle"].get(src, {}).get(v, math.nan),
               "spread_skill": result["scores"][src][v][region]["spread_skill"]}
        for level in ("0.999", "0.9999"):
            if level in q["truth"][v]:
                row[f"q{level}_ratio"] = q[src][v][level][0] / q["truth"][v][level][0]
        out[v] = row
    return out


def law_quantiles(cfg, members: int, levels: list[str]) -> dict | None:
    """{variable: {level: q}}: the benchmark law's own tail quantiles on the held-out dates,
    pooled over `members` exact draws per date (oracle stream, its own seed); None without the
    law. The truth is ONE draw on 8 dates: its q0.9999 strays from the law's by ±20 %."""
    ds = PairedDataset.from_config(held_out_config(cfg), require_complete=False)
    oracle = make_oracle(cfg, ds, members, seed=987654321)
    if oracle is None:
        return None
    draws = np.stack([oracle(i) for i in range(len(ds))], axis=1)  # (M, dates, V, N)
    return {v: {lv: float(np.quantile(draws[:, :, j], float(lv), method="hazen"))
                for lv in levels} for j, v in enumerate(ds.variables)}


def add_law_ratios(rows: dict, result: dict, law: dict) -> None:
    """q_forecast / q_law and q_truth / q_law beside the ratios to the truth."""
    q = result["extremes"]["quantiles"]
    src = result["sources"][0]
    for v, row in rows.items():
        for level, value in law[v].items():
            row[f"q{level}_forecast_over_law"] = q[src][v][level][0] / value
            row[f"q{level}_truth_over_law"] = q["truth"][v][level][0] / value


def format_rows(rows: dict) -> str:
    lines = ["variable  CRPS/oracle  high-k ratio  worst bin>LR (oracle's)  spread/skill  q0.999"
             "  q0.9999"]
    for v, r in rows.items():
        lines.append(f"{v:<8}  {r['crps_ratio']:11.3f}  {r['high_k_ratio']:12.3f}  "
                     f"{r['worst_bin_above_lr_nyquist']:12.3f} ({r['oracle_worst_bin']:5.2f})"
                     f"  {r['spread_skill']:12.3f}  "
                     f"{r.get('q0.999_ratio', math.nan):6.3f}  {r.get('q0.9999_ratio', math.nan):7.3f}")
    if any("q0.999_truth_over_law" in r for r in rows.values()):
        lines.append("tails against the law's own quantiles (exact draws pooled; the truth is one "
                     "draw):\nvariable  forecast/law q0.999 q0.9999   truth/law q0.999 q0.9999")
        for v, r in rows.items():
            lines.append(f"{v:<8}  {r['q0.999_forecast_over_law']:18.3f} "
                         f"{r['q0.9999_forecast_over_law']:7.3f}   "
                         f"{r['q0.999_truth_over_law']:15.3f} {r['q0.9999_truth_over_law']:7.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="demo")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-from", type=Path, default=None,
                    help="reuse DIR/data's benchmark stores (same benchmark settings)")
    ap.add_argument("--law-members", type=int, default=32,
                    help="exact draws per held-out date for the law's own tail quantiles "
                         "(0: skip)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    overrides = [*args.overrides, f"run.out_dir={args.out}"]
    if args.data_from:
        overrides += [f"data.{k}_store={args.data_from / 'data' / f'{k}.zarr'}"
                      for k in ("lr", "hr", "forcings")]
    cfg = load_config(args.config, overrides)
    started = time.perf_counter()
    run = run_pipeline(cfg, args.out, progress=False, benchmark=args.data_from is None,
                       deterministic=False)
    rows = per_variable(run["result"])
    law = law_quantiles(cfg, args.law_members, ["0.999", "0.9999"]) if args.law_members else None
    if law is not None:
        add_law_ratios(rows, run["result"], law)
    print("\n".join(run["result"]["summary"]))
    print(format_rows(rows))
    seconds = time.perf_counter() - started
    print(f"took {seconds:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in run["times"].items()))
    (args.out / "skill.json").write_text(json.dumps({
        "overrides": args.overrides, "config": args.config, "summary": run["result"]["summary"],
        "per_variable": rows, "times": run["times"], "seconds": seconds,
        "train": run["train"]["diffusion"]}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
