"""The evaluation driver: an ensemble store against truth and the baselines, streamed by date.

    result = evaluate(cfg, "runs/tiny/ensemble.zarr", out_dir="runs/tiny/eval")

For each date (those the forecast store and the truth / LR stores share) it reads the forecast
ensemble (M, V, N) of that date only, the truth (V, N) (default `cfg.data.hr_store`), and builds
the baselines (`hpcds.evaluate.baselines`: interpolation, deterministic when a regression
checkpoint is given, the oracle on the benchmark), then updates per source:

    scores    `ScoreAccumulator` (area-weighted CRPS fair / standard / almost-fair, RMSE of the
              ensemble mean, spread, spread/skill, rank histogram) per variable and region
    spectra   mean power over members and dates (limited-area DCT or spherical harmonics),
              with the truth's
    extremes  a capped, seeded subsample of values per variable, pooled over dates

and writes `scores.json` (atomically) to `out_dir`; the figures are drawn by
`hpcds.evaluate.report`. Returns the scores dict with a `summary` of five lines.
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
from hpcds.data.cells import store_cells_for_grid
from hpcds.data.dates import iso
from hpcds.data.paired import PairedDataset
from hpcds.ensemble.output import EnsembleStore
from hpcds.errors import StoreError
from hpcds.evaluate import baselines
from hpcds.evaluate.accumulate import ScoreAccumulator
from hpcds.evaluate.extremes import qq_data, quantiles_with_bootstrap
from hpcds.evaluate.regions import regions_for_grid
from hpcds.evaluate.spectra import high_wavenumber_ratio, spectral_ratio, spectrum_for_grid

SOURCES = ("forecast", "oracle", "deterministic", "interpolation")
EXTREME_CAP = 200_000  # values kept per (source, variable) for quantiles and q-q
MAP_SOURCES = ("lr_interp", "truth", "member_0", "member_1", "deterministic")
FORECAST_FIX = "--forecast takes an ensemble store written by `hpcds sample` (sampling.output)"


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

    def result(self, variables) -> dict | None:
        if not self.ok or self.k is None:
            return None
        mean = {s: self.sums[s] / self.n[s] for s in self.sums}
        out = {"k": self.k.tolist(), "k_label": self.label, "power": {}, "high_k_ratio": {}}
        for s, p in mean.items():
            out["power"][s] = {v: p[i].tolist() for i, v in enumerate(variables)}
            if s != "truth" and "truth" in mean:
                out["high_k_ratio"][s] = {
                    v: high_wavenumber_ratio(self.k, spectral_ratio(p[i], mean["truth"][i]))
                    for i, v in enumerate(variables)}
        return out


class _Extremes:
    def __init__(self, variables, n_dates, rng):
        self.variables, self.rng = variables, rng
        self.per_date = max(1, EXTREME_CAP // max(n_dates, 1))
        self.values = {}

    def update(self, source, values):
        """values (M, V, N): a random subsample of ≤ per_date values per variable."""
        flat = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
        n = flat.shape[1]
        take = (self.rng.choice(n, self.per_date, replace=False) if n > self.per_date
                else slice(None))
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


def _members(store: EnsembleStore, t: int, var_index: list[int], cells: np.ndarray
             ) -> np.ndarray:
    """(M, V, N) float64: every member of time index t, variables `var_index`, the grid's
    cells in SFC order (`cells` indexes the store)."""
    return np.moveaxis(store.read(t)[0][var_index][..., cells], 1, 0).astype(np.float64)


def evaluate(cfg, forecast_path, truth_path=None, out_dir="eval",
             deterministic_checkpoint=None, progress: bool = True) -> dict:
    """Score the ensemble store `forecast_path` against the truth HR store (default
    cfg.data.hr_store) and the baselines; write `out_dir/scores.json`; return the scores
    with `summary` (five lines)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not Path(forecast_path).exists():
        raise StoreError(f"no forecast store at {forecast_path}: sample one with `hpcds sample`")
    c = copy.deepcopy(cfg)
    if truth_path is not None:
        c.data.hr_store = str(truth_path)
    ds = PairedDataset.from_config(c, require_complete=False)
    forecast = EnsembleStore.open(forecast_path, fix=FORECAST_FIX)
    missing = [v for v in ds.variables if v not in forecast.variables]
    if missing:
        raise StoreError(f"{forecast_path} lacks variables {missing}: set data.variables to "
                         f"some of {forecast.variables}")
    f_var = [forecast.variables.index(v) for v in ds.variables]
    cells = store_cells_for_grid(forecast, ds.hr_grid, "the forecast store",
                                 "evaluate with the config it was sampled with")
    f_dates = {d: t for t, d in enumerate(forecast.dates)}
    done = forecast.done()
    dates = [i for i, d in enumerate(ds.dates) if d in f_dates and done[f_dates[d]].all()]
    if not dates:
        raise StoreError(f"{forecast_path} has no complete date in common with the truth "
                         f"store {c.data.hr_store}")
    members = forecast.n_members
    oracle = baselines.make_oracle(c, ds, members, seed=int(cfg.run.seed) + 1)
    det_store = None
    if deterministic_checkpoint is not None:
        det_path = baselines.deterministic_store(c, deterministic_checkpoint, out_dir, progress)
        det_store = EnsembleStore.open(det_path)
        det_dates = {d: t for t, d in enumerate(det_store.dates)}
    orography = oracle.law.geometry.orog_hr if oracle is not None else _orography(ds)
    regions = regions_for_grid(ds.hr_grid, orography_m=orography,
                               terrain_mask_m=c.evaluation.terrain_mask_m)
    w = ds.hr_grid.area_weights
    accs = {"forecast": ScoreAccumulator(ds.variables, regions, w, members),
            "interpolation": ScoreAccumulator(ds.variables, regions, w, 1)}
    if oracle is not None:
        accs["oracle"] = ScoreAccumulator(ds.variables, regions, w, members)
    if det_store is not None:
        accs["deterministic"] = ScoreAccumulator(ds.variables, regions, w, 1)
    spectra = _Spectra(ds.hr_grid)
    extremes = _Extremes(ds.variables, len(dates), np.random.default_rng(cfg.run.seed))
    maps = None
    for n, i in enumerate(tqdm(dates, desc="evaluate", unit="date", leave=False,
                               file=sys.stderr, disable=None if progress else True)):
        date = ds.dates[i]
        truth = ds.read_hr(i).astype(np.float64)
        fields = {"forecast": _members(forecast, f_dates[date], f_var, cells),
                  "interpolation": baselines.interpolation(ds, i)}
        if oracle is not None:
            o = oracle(i)
            if o is not None:
                fields["oracle"] = o
        if det_store is not None and date in det_dates:
            fields["deterministic"] = _members(det_store, det_dates[date], f_var, cells)[:1]
        for s, x in fields.items():
            if s in accs:
                accs[s].update(x, truth, date)
            spectra.update(s, x)
            extremes.update(s, x)
        spectra.update("truth", truth[None])
        extremes.update("truth", truth[None])
        if n == 0:  # the first date's fields for the maps
            maps = {"date": iso(date), "lr_interp": fields["interpolation"][0],
                    "truth": truth, "member_0": fields["forecast"][0],
                    "member_1": fields["forecast"][min(1, members - 1)]}
            if "deterministic" in fields:
                maps["deterministic"] = fields["deterministic"][0]
            if "oracle" in fields:
                maps["oracle_0"] = fields["oracle"][0]
    scores = {s: a.result() for s, a in accs.items()}
    result = {
        "forecast_store": str(Path(forecast_path).resolve()),
        "truth_store": str(Path(c.data.hr_store).resolve()),
        "grid": ds.hr_grid.name, "variables": list(ds.variables),
        "units": {v: ds.hr.units.get(v, "") for v in ds.variables},
        "dates": [iso(ds.dates[i]) for i in dates], "members": members,
        "regions": [r.name for r in regions],
        "sources": list(accs), "scores": scores,
        "crps_ratio_to_oracle": _ratios(scores, ds.variables, regions[0].name),
        "spectra": spectra.result(ds.variables),
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


def _orography(ds):
    static = getattr(ds, "_static", None)
    return np.asarray(static["orog"]) if isinstance(static, dict) and "orog" in static else None


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
    """Five lines: CRPS (÷ oracle CRPS) per source, spectral ratio at high wavenumbers,
    spread/skill, extremes, scope."""
    variables, region = result["variables"], result["regions"][0]
    scores, ratios = result["scores"], result["crps_ratio_to_oracle"]
    parts = []
    for s in SOURCES:
        if s in scores:
            crps = _mean(_crps(scores[s][v][region]) for v in variables)
            if s in ratios:
                parts.append(f"{s} {_mean(ratios[s].values()):.3f}")
            else:
                parts.append(f"{s} {crps:.4g}")
    what = "CRPS / oracle CRPS" if ratios else "CRPS (mean over variables)"
    lines = [f"{what}: " + ", ".join(parts)]
    spec = result.get("spectra")
    if spec and spec.get("high_k_ratio"):
        lines.append("spectral ratio at high wavenumbers (source/truth, geometric mean over "
                     "variables, 1 = right): " + ", ".join(
            f"{s} {_geomean(spec['high_k_ratio'][s].values()):.3f}"
            for s in SOURCES if s in spec["high_k_ratio"]))
    else:
        lines.append("spectral ratio at high wavenumbers: n/a for this grid")
    lines.append("spread/skill (1 = calibrated): " + ", ".join(
        f"{s} {_mean(scores[s][v][region]['spread_skill'] for v in variables):.3f}"
        for s in ("forecast", "oracle") if s in scores))
    ext = result["extremes"]["quantiles"]
    q = str(max(float(k) for k in next(iter(ext["truth"].values()))))
    v = variables[-1]
    lines.append(f"{v} q{q}: " + ", ".join(
        f"{s} {ext[s][v][q][0]:.4g}" for s in ("truth", "forecast", "oracle", "deterministic",
                                               "interpolation") if s in ext))
    lines.append(f"{len(result['dates'])} dates x {result['members']} members on {result['grid']}"
                 f", regions {', '.join(result['regions'])}")
    return lines
