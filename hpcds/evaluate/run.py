"""The evaluation driver: labelled ensemble stores against truth and the baselines, by date.

    result = evaluate(cfg, "runs/tiny/ensemble.zarr", out_dir="runs/tiny/eval")
    result = evaluate(cfg, {"before": "runs/demo/ensemble.zarr",
                            "after": "runs/demo-ft/ensemble.zarr"}, out_dir="runs/ft-eval")

A bare store is the source "forecast"; several are labelled (`hpcds.evaluate.sources`) and must
cover the same dates, variables, grid and member count. For each date (those the forecast
stores and the truth / LR stores share) it reads the truth (V, N) (default `cfg.data.hr_store`)
and then, one source at a time (one (M, V, N) ensemble in memory), every forecast and the
baselines (`hpcds.evaluate.baselines`: interpolation, deterministic when a regression
checkpoint is given, the oracle on the benchmark), and updates per source:

    scores    `ScoreAccumulator` (area-weighted CRPS fair / standard / almost-fair, RMSE of the
              ensemble mean, spread, spread/skill, rank histogram) per variable and region
    spectra   mean power over members and dates (limited-area DCT or spherical harmonics),
              with the truth's
    extremes  a capped, seeded subsample of values per variable, pooled over dates

Every source is scored alone: its numbers do not depend on which other sources are evaluated
with it. Writes `scores.json` (atomically) to `out_dir`, every result keyed by source label;
the figures are drawn by `hpcds.evaluate.report`. Returns the scores dict with a `summary` of
five lines.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hpcds.atomic import atomic_open, atomic_write_text
from hpcds.data.dates import iso
from hpcds.data.paired import PairedDataset
from hpcds.evaluate import baselines
from hpcds.evaluate.accumulate import ScoreAccumulator
from hpcds.evaluate.extremes import qq_data, quantiles_with_bootstrap
from hpcds.evaluate.regions import regions_for_grid
from hpcds.evaluate.sources import (
    BASELINES,
    StoreSource,
    ensemble_sources,
    forecast_paths,
    open_forecasts,
    ordered_sources,
)
from hpcds.evaluate.spectra import (
    high_wavenumber_ratio,
    lr_nyquist_k,
    spectral_ratio,
    spectrum_for_grid,
    worst_bin,
)
from hpcds.errors import StoreError

EXTREME_CAP = 200_000  # values kept per (source, variable) for quantiles and q-q
MAP_MEMBERS = 2  # members of each forecast on the maps


# --- spectra and extremes ---

class _Spectra:
    def __init__(self, grid):
        self.grid, self.ok = grid, True
        self.k, self.label, self.sums, self.n = None, "", {}, {}

    def update(self, source: str, values: np.ndarray):
        """values (M, V, N): member power averaged, summed over dates."""
        if not self.ok:
            return
        try:
            k, power, label = spectrum_for_grid(values, self.grid)
        except ValueError:
            self.ok = False
            return
        self.k, self.label = k, label
        self.sums[source] = self.sums.get(source, 0) + power.mean(0)
        self.n[source] = self.n.get(source, 0) + 1

    def result(self, variables, k_lr: float | None) -> dict | None:
        """Mean power per source and its ratios to the truth's (every source) and to the
        oracle's, the law's own (the forecasts): the high-k ratio and, with k_lr (the LR
        grid's Nyquist in the spectra's units), the worst bin above k_lr."""
        if not self.ok or self.k is None:
            return None
        mean = {s: self.sums[s] / self.n[s] for s in self.sums}
        out = {"k": self.k.tolist(), "k_label": self.label, "power": {}, "high_k_ratio": {},
               "high_k_over_oracle": {}, "lr_nyquist": k_lr, "worst_bin": {},
               "worst_bin_over_oracle": {}}
        for s, p in mean.items():
            out["power"][s] = {v: p[i].tolist() for i, v in enumerate(variables)}
            refs = [("truth", "worst_bin")] if s != "truth" and "truth" in mean else []
            if s not in (*BASELINES, "truth") and "oracle" in mean:
                refs.append(("oracle", "worst_bin_over_oracle"))
            for ref, key in refs:
                ratio = [spectral_ratio(p[i], mean[ref][i]) for i in range(len(variables))]
                out["high_k_ratio" if ref == "truth" else "high_k_over_oracle"][s] = {
                    v: high_wavenumber_ratio(self.k, r) for v, r in zip(variables, ratio)}
                if k_lr is not None:
                    out[key][s] = {v: worst_bin(self.k, r, k_lr)
                                   for v, r in zip(variables, ratio)}
        return out


class _Extremes:
    def __init__(self, variables, n_dates, seed, cap=EXTREME_CAP):
        self.variables, self.seed = variables, int(seed)
        self.per_date = max(1, cap // max(n_dates, 1))
        self.values = {}

    def update(self, source, values, n):
        """values (M, V, N) of the n-th date: a random subsample of ≤ per_date values per
        variable, drawn from (seed, n) alone so that a source's pick does not depend on the
        other sources (the same store under two labels gets the same values)."""
        flat = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
        size = flat.shape[1]
        take = (np.random.default_rng([self.seed, n]).choice(size, self.per_date, replace=False)
                if size > self.per_date else slice(None))
        for i, v in enumerate(self.variables):
            self.values.setdefault(source, {}).setdefault(v, []).append(flat[i, take])

    def result(self, qs, n_boot, seed):
        out = {"quantiles": {}, "qq": {}}
        pooled = {s: {v: np.concatenate(x) for v, x in d.items()} for s, d in self.values.items()}
        truth = pooled.get("truth", {})
        for s, d in pooled.items():
            for v, x in d.items():
                q = quantiles_with_bootstrap(x, qs, n_boot, np.random.default_rng(seed))
                q = {str(k): list(map(float, e)) for k, e in q.items()}
                out["quantiles"].setdefault(s, {})[v] = q
                if s != "truth" and v in truth:
                    qt, qf = qq_data(x, truth[v])
                    out["qq"].setdefault(s, {})[v] = {"truth": np.asarray(qt).tolist(),
                                                      "forecast": np.asarray(qf).tolist()}
        return out


# --- the driver ---

def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def member_map_key(label: str, k: int) -> str:
    """The key of member k of forecast `label` in the maps (`maps.npz`)."""
    return f"{label}_member_{k}"


def _map_fields(source: str, x: np.ndarray, forecast_labels) -> dict:
    """{map key: (V, N)} of one source's (M, V, N) fields on the first date: MAP_MEMBERS
    members of a forecast, the first of a baseline. Copies, so that the maps do not keep
    every source's whole ensemble alive."""
    if source in forecast_labels:
        return {member_map_key(source, k): x[k].copy() for k in range(min(MAP_MEMBERS, len(x)))}
    return {{"interpolation": "lr_interp", "oracle": "oracle_0"}.get(source, source): x[0].copy()}


def _fields(forecasts, oracle, det, ds, i):
    """(source, (M_s, V, N) float64) for date i of `ds`, one source at a time (only one
    ensemble in memory): every forecast, then the baselines that have this date."""
    date = ds.dates[i]
    for f in forecasts:
        yield f.label, f.members(date)
    yield "interpolation", baselines.interpolation(ds, i)
    if oracle is not None:
        o = oracle(i)
        if o is not None:
            yield "oracle", o
    if det is not None and date in det.dates:
        yield "deterministic", det.members(date)[:1]


def evaluate(cfg, forecasts, truth_path=None, out_dir="eval",
             deterministic_checkpoint=None, progress: bool = True) -> dict:
    """Score `forecasts` — one ensemble store path (the source "forecast") or a mapping
    label → store path — against the truth HR store (default cfg.data.hr_store) and the
    baselines; write `out_dir/scores.json`; return the scores with `summary` (five lines, six
    with the oracle)."""
    started = time.perf_counter()
    paths = forecast_paths(forecasts)  # bad labels and missing stores fail before any work
    if truth_path is not None and not Path(truth_path).exists():
        # checked here: PairedDataset would name data.hr_store, which --truth replaces
        raise StoreError(f"no truth store at {truth_path} (--truth): pass an HR store, or "
                         "leave --truth out to score against data.hr_store")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = copy.deepcopy(cfg)
    if truth_path is not None:
        c.data.hr_store = str(truth_path)
    ds = PairedDataset.from_config(c, require_complete=False)
    forecasts, dates = open_forecasts(paths, ds)
    labels = [f.label for f in forecasts]
    members = forecasts[0].n_members
    oracle = baselines.make_oracle(c, ds, members, seed=int(cfg.run.seed) + 1)
    det = None
    if deterministic_checkpoint is not None:
        det = StoreSource("deterministic", baselines.deterministic_store(
            c, deterministic_checkpoint, out_dir, progress), ds)
    orography = oracle.law.geometry.orog_hr if oracle is not None else ds.static_fields["orog"]
    regions = regions_for_grid(ds.hr_grid, orography_m=orography,
                               terrain_mask_m=c.evaluation.terrain_mask_m)
    w = ds.hr_grid.area_weights
    sizes = {**{s: members for s in labels}, "interpolation": 1}
    if oracle is not None:
        sizes["oracle"] = members
    if det is not None:
        sizes["deterministic"] = 1
    accs = {s: ScoreAccumulator(ds.variables, regions, w, m) for s, m in sizes.items()}
    spectra = _Spectra(ds.hr_grid)
    extremes = _Extremes(ds.variables, len(dates), cfg.run.seed)
    maps = None
    for n, i in enumerate(tqdm(dates, desc="evaluate", unit="date", leave=False,
                               file=sys.stderr, disable=None if progress else True)):
        truth = ds.read_hr(i).astype(np.float64)
        if n == 0:  # the first date's fields for the maps
            maps = {"date": iso(ds.dates[i]), "truth": truth}
        for s, x in _fields(forecasts, oracle, det, ds, i):
            accs[s].update(x, truth, ds.dates[i])
            spectra.update(s, x)
            extremes.update(s, x, n)
            if n == 0:
                maps.update(_map_fields(s, x, labels))
            del x  # before the next source's ensemble is read
        spectra.update("truth", truth[None])
        extremes.update("truth", truth[None], n)
    scores = {s: accs[s].result() for s in ordered_sources(labels, accs)}
    result = {
        "forecasts": {f.label: str(f.path.resolve()) for f in forecasts},
        "truth_store": str(Path(c.data.hr_store).resolve()),
        "grid": ds.hr_grid.name, "variables": list(ds.variables),
        "units": {v: ds.hr.units.get(v, "") for v in ds.variables},
        "dates": [iso(ds.dates[i]) for i in dates], "members": members,
        "regions": [r.name for r in regions],
        "sources": list(scores), "scores": scores,
        "crps_ratio_to_oracle": _ratios(scores, ds.variables, regions[0].name),
        "spectra": spectra.result(ds.variables, lr_nyquist_k(ds.lr_grid)),
        "extremes": extremes.result(list(cfg.evaluation.quantiles), int(cfg.evaluation.bootstrap),
                                    int(cfg.run.seed)),
    }
    result["summary"] = summary_lines(result)
    result["seconds"] = time.perf_counter() - started
    result = _jsonable(result)
    atomic_write_text(out_dir / "scores.json", json.dumps(result, indent=1))
    with atomic_open(out_dir / "maps.npz", "wb") as f:
        np.savez_compressed(f, **{k: v for k, v in (maps or {}).items() if k != "date"})
    result["maps"] = maps
    return result


def _crps(entry: dict) -> float:
    return entry.get("crps_fair", entry.get("crps"))


def _ratios(scores, variables, region) -> dict:
    if "oracle" not in scores:
        return {}
    out = {}
    for s, by_var in scores.items():
        out[s] = {}
        for v in variables:
            ref = _crps(scores["oracle"][v][region])
            out[s][v] = _crps(by_var[v][region]) / ref if ref else float("nan")
    return out


def _geomean(values) -> float:
    vals = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(vals)))) if vals else float("nan")


def _mean(values) -> float:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def summary_lines(result: dict) -> list[str]:
    """Five lines, each listing the sources in `result["sources"]` order (the forecasts,
    then the baselines): CRPS (÷ oracle CRPS), spectral ratio at high wavenumbers,
    spread/skill (the ensembles), extremes (with the truth), scope; a sixth with the oracle:
    the forecasts against the benchmark's law (`_law_line`)."""
    variables, region = result["variables"], result["regions"][0]
    scores, ratios, sources = result["scores"], result["crps_ratio_to_oracle"], result["sources"]
    parts = []
    for s in sources:
        if s in ratios:
            parts.append(f"{s} {_mean(ratios[s].values()):.3f}")
        else:
            parts.append(f"{s} {_mean(_crps(scores[s][v][region]) for v in variables):.4g}")
    what = "CRPS / oracle CRPS" if ratios else "CRPS (mean over variables)"
    lines = [f"{what}: " + ", ".join(parts)]
    spec = result.get("spectra")
    if spec and spec.get("high_k_ratio"):
        lines.append("spectral ratio at high wavenumbers (source/truth, geometric mean over "
                     "variables, 1 = right): " + ", ".join(
            f"{s} {_geomean(spec['high_k_ratio'][s].values()):.3f}"
            for s in sources if s in spec["high_k_ratio"]))
    else:
        lines.append("spectral ratio at high wavenumbers: n/a for this grid")
    lines.append("spread/skill (1 = calibrated): " + ", ".join(
        f"{s} {_mean(scores[s][v][region]['spread_skill'] for v in variables):.3f}"
        for s in ensemble_sources(result)))
    ext = result["extremes"]["quantiles"]
    q = str(max(float(k) for k in next(iter(ext["truth"].values()))))
    v = variables[-1]
    lines.append(f"{v} q{q}: " + ", ".join(
        f"{s} {ext[s][v][q][0]:.4g}" for s in ("truth", *sources) if s in ext))
    lines.append(f"{len(result['dates'])} dates x {result['members']} members on {result['grid']}"
                 f", regions {', '.join(result['regions'])}")
    law = _law_line(result, ext, v)
    if law:
        lines.append(law)
    return lines


def _law_line(result: dict, ext: dict, tail_var: str) -> str | None:
    """The forecasts against the benchmark's law (the oracle) when it is there: high-k ratio
    per variable, the worst bin above the LR Nyquist, the tail variable's top two quantiles.
    The truth is ONE draw of the law: on few dates its spectra and tails stray from the
    law's by more than the goals' margins (perf/truth_noise.py), the oracle's do not."""
    spec = result.get("spectra") or {}
    over = spec.get("high_k_over_oracle") or {}
    if not over or "oracle" not in ext:
        return None
    levels = sorted(next(iter(ext["oracle"].values())), key=float)[-2:]
    parts = []
    for s in over:
        text = f"{s} high-k " + ", ".join(f"{v} {r:.2f}" for v, r in over[s].items())
        worst = (spec.get("worst_bin_over_oracle") or {}).get(s)
        far = {v: abs(np.log(r)) for v, r in (worst or {}).items()
               if r is not None and np.isfinite(r) and r > 0}
        if far:
            v = max(far, key=far.get)
            text += f"; worst bin above the LR Nyquist {worst[v]:.2f} ({v})"
        text += f"; {tail_var} " + ", ".join(
            f"q{q} {ext[s][tail_var][q][0] / ext['oracle'][tail_var][q][0]:.2f}" for q in levels)
        parts.append(text)
    return "against the law (source/oracle, 1 = right): " + " | ".join(parts)
