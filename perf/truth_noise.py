"""How far the benchmark's exact law strays from its one-draw truth on N held-out dates.

    .venv/bin/python perf/truth_noise.py                       # the demo's config, 128 dates
    .venv/bin/python perf/truth_noise.py --total 384 --blocks 8 16 32 64 128 benchmark.seed=7
    .venv/bin/python perf/truth_noise.py --reference oracle     # the law line's own noise

The demo scores its ensemble against ONE draw of the law (the truth) on `training.val_dates`
consecutive held-out dates. Issue 12's per-bin and tail criteria compare the forecast with
that draw: no wavenumber bin above the LR Nyquist off by ×2, tp q0.999 and q0.9999 within
10 %. A perfect model IS the law, so how often the law's own exact draws (the oracle,
`--members` per date, as the demo's evaluation draws them) meet those criteria against the
truth is the most any model can be asked to meet them with that many dates.
`--reference oracle` scores the oracle against a second oracle ensemble instead: the noise of
the summary's sixth line (the forecast against the law's own draws) for a model that is the law.

Draws `--total` consecutive dates of the config's law from the first held-out date on (the
benchmark's n_dates is extended for that; no store is written), splits them into blocks of
N dates for each N in `--blocks`, and prints per N: the share of blocks in which the oracle
meets each criterion against the truth, and the median / worst of its figures. Criteria as
`perf/skill_run.py` computes them: the spectra are the evaluation's (`spectrum_for_grid`, the
members' power averaged, summed over dates), the high-k ratio `high_wavenumber_ratio` (the
upper half of the k range), quantiles pooled over dates and members (hazen, unweighted).
Cost ≈ (members + 1) × 0.09 s per date on the demo's grid (one thread): 128 dates ≈ 100 s.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from hpcds.config.load import load_config
from hpcds.data.benchmark import build_law, oracle_sample
from hpcds.evaluate.spectra import (
    high_wavenumber_ratio,
    lr_nyquist_k,
    spectral_ratio,
    spectrum_for_grid,
    worst_bin,
)
from hpcds.grids import make_grid

LEVELS = (0.999, 0.9999)


def draw(cfg, total: int, members: int, seed: int, reference: str = "truth") -> dict:
    """Per date j of the `total` from the first held-out date: the reference's and the
    oracle's (member-mean) spectra (total, V, nk) and tail values (total, V, N_ref) /
    (total, V, M·N). The reference is the truth (one draw) or, with reference="oracle",
    another `members` exact draws (sub-seed seed + 1000): what the summary's line against
    the law compares, for a model that is the law."""
    first = int(cfg.benchmark.n_dates) - int(cfg.training.val_dates)
    cfg = copy.deepcopy(cfg)
    cfg.benchmark.n_dates = first + total
    law = build_law(cfg)
    hr = law.geometry.hr
    p_ref, p_oracle, v_ref, v_oracle = [], [], [], []
    for j in range(first, first + total):
        lr = law.lr_state(j)
        if reference == "truth":
            ref = law.sample(lr, j)[None]  # (1, V, N) the stored truth: member 0, truth stream
        else:
            ref = oracle_sample(law, lr, j, members, seed=seed + 1000)  # (M, V, N)
        oracle = oracle_sample(law, lr, j, members, seed=seed)  # (M, V, N)
        k, pr, _ = spectrum_for_grid(ref, hr)
        _, po, _ = spectrum_for_grid(oracle, hr)
        p_ref.append(pr.mean(0))
        p_oracle.append(po.mean(0))
        v_ref.append(np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1))
        v_oracle.append(np.moveaxis(oracle, 1, 0).reshape(oracle.shape[1], -1))
    return {"k": k, "variables": list(law.variables), "p_ref": np.array(p_ref),
            "p_oracle": np.array(p_oracle), "v_ref": np.array(v_ref),
            "v_oracle": np.array(v_oracle)}


def block_figures(d: dict, dates: np.ndarray, k_lr: float, tail_var: int) -> dict:
    """The oracle's figures against the reference (the truth, or a second oracle ensemble) on
    the given dates, as the evaluation computes them: per variable the worst bin above the LR
    Nyquist and the high-k ratio; the tail variable's quantile ratios. nan where the reference
    has no power (no rain on any date)."""
    k = d["k"]
    ratio = [spectral_ratio(o, r) for o, r in  # (V, nk); an empty corner bin: nan
             zip(d["p_oracle"][dates].mean(0), d["p_ref"][dates].mean(0))]
    worst = np.array([worst_bin(k, r, k_lr) for r in ratio])
    with warnings.catch_warnings():  # a dry block: the mean of no bins
        warnings.simplefilter("ignore", RuntimeWarning)
        high_k = np.array([high_wavenumber_ratio(k, r) for r in ratio])
    r = d["v_ref"][dates][:, tail_var].ravel()
    o = d["v_oracle"][dates][:, tail_var].ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        tails = np.array([np.quantile(o, q, method="hazen") / np.quantile(r, q, method="hazen")
                          for q in LEVELS])
    return {"worst_bin": worst, "high_k": high_k, "tails": tails}


def summarise(d: dict, sizes: list[int], k_lr: float, tail_var: int) -> list[dict]:
    rows = []
    total = len(d["p_ref"])
    for n in sizes:
        blocks = [block_figures(d, np.arange(b * n, (b + 1) * n), k_lr, tail_var)
                  for b in range(total // n)]
        if not blocks:
            continue
        worst = np.array([b["worst_bin"] for b in blocks])  # (blocks, V)
        high_k = np.array([b["high_k"] for b in blocks])
        tails = np.array([b["tails"] for b in blocks])  # (blocks, levels)
        bins_ok = (np.abs(np.log(worst)) < np.log(2.0)).all(1)
        tails_ok = (np.abs(tails - 1.0) <= 0.10).all(1)
        high_k_ok = ((high_k >= 0.8) & (high_k <= 1.25)).all(1)
        rows.append({
            "dates": n, "blocks": len(blocks),
            "p_no_x2_bin": float(bins_ok.mean()), "p_tails_within_10pct": float(tails_ok.mean()),
            "p_high_k_in_range": float(high_k_ok.mean()),
            "p_all_three": float((bins_ok & tails_ok & high_k_ok).mean()),
            # a block with no rain at all has no tp spectrum or quantile ratio (nan): it
            # fails the goals above and is left out of these figures
            "worst_bin_median": np.exp(np.nanmedian(np.abs(np.log(worst)), 0)).tolist(),
            "worst_bin_max": np.exp(np.nanmax(np.abs(np.log(worst)), 0)).tolist(),
            "tail_ratio_range": [np.nanmin(tails, 0).tolist(), np.nanmax(tails, 0).tolist()],
            "undefined_blocks": int(np.isnan(worst).any(1).sum())})
    return rows


def format_rows(rows: list[dict], variables: list[str], tail: str, ref: str = "truth") -> str:
    lines = [f"{'dates':>5} {'blocks':>6}  P(no x2 bin)  P({tail} tails ±10%)  P(high-k ok)  "
             f"P(all)   worst bin |log| median per variable ({', '.join(variables)}) / max   "
             f"{tail} q{LEVELS[0]}, q{LEVELS[1]} oracle/{ref} range"]
    for r in rows:
        med = " ".join(f"{x:.2f}" for x in r["worst_bin_median"])
        mx = " ".join(f"{x:.2f}" for x in r["worst_bin_max"])
        (lo3, lo4), (hi3, hi4) = r["tail_ratio_range"]
        lines.append(f"{r['dates']:5d} {r['blocks']:6d}  {r['p_no_x2_bin']:12.2f}  "
                     f"{r['p_tails_within_10pct']:18.2f}  {r['p_high_k_in_range']:12.2f}  "
                     f"{r['p_all_three']:6.2f}   {med} / {mx}   "
                     f"{lo3:.2f}-{hi3:.2f}, {lo4:.2f}-{hi4:.2f}"
                     + (f"  ({r['undefined_blocks']} dry)" if r["undefined_blocks"] else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--total", type=int, default=128, help="dates drawn (default 128)")
    p.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64],
                   help="held-out set sizes to test (default 8 16 32 64)")
    p.add_argument("--members", type=int, default=8, help="oracle draws per date (the demo's 8)")
    p.add_argument("--tail-variable", default="tp")
    p.add_argument("--seed", type=int, default=1, help="the oracle's sub-seed")
    p.add_argument("--reference", choices=("truth", "oracle"), default="truth",
                   help="score the oracle against the truth (default) or against another "
                        "oracle ensemble: the noise of the summary's line against the law")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    started = time.perf_counter()
    d = draw(cfg, a.total, a.members, a.seed, a.reference)
    tail_var = d["variables"].index(a.tail_variable)
    rows = summarise(d, sorted(a.blocks), lr_nyquist_k(make_grid(cfg.grid.lr)), tail_var)
    against = ("its one-draw truth" if a.reference == "truth"
               else f"another {a.members} exact draws")
    print(f"the law's {a.members} exact draws per date against {against}, "
          f"{a.total} dates from the first held-out one ({time.perf_counter() - started:.0f} s)")
    print(format_rows(rows, d["variables"], a.tail_variable, a.reference))
    if a.json:
        a.json.write_text(json.dumps({"config": a.config, "overrides": a.overrides,
                                      "reference": a.reference,
                                      "total": a.total, "members": a.members, "rows": rows},
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
