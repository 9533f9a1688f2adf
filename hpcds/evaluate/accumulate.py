"""Streaming, memory-light accumulation of probabilistic scores over dates and regions.

The caller streams one date at a time (``update`` with the whole ensemble of that date, or a
slice of its cells, e.g. one model-parallel rank's shard); only small per-date sums are kept:
for every date, variable and region the area-weighted sums Σ w·q over the cells seen so far
of q ∈ {fair CRPS, standard CRPS, almost-fair CRPS, squared ensemble-mean error, unbiased
ensemble variance} and the weight Σ w itself, plus rank-histogram counts per variable and
region. Every cell needs all M members at once (the CRPS pair term couples members), so
split work by cells, never by members. Accumulators built on disjoint cells or dates are
combined with ``merge``; partial sums of the same date add up.

Final scores (``result``), per variable and region, with d running over the dates:
- crps_* = mean_d [Σ w·crps / Σ w]          (area-weighted mean, then mean over dates)
- rmse   = sqrt(mean_d [Σ w·(x̄ − y)² / Σ w])
- spread = sqrt(mean_d [Σ w·var_unbiased / Σ w])
- spread_skill = sqrt((M+1)/M) · spread / rmse
- M = 1 (a deterministic baseline): the three CRPS values are all the MAE, spread is 0
- rank_histogram: counts (M+1) of observation ranks over all cells and dates (unweighted,
  random tie-breaking)
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np

from hpcds.evaluate.regions import Region
from hpcds.evaluate.scores import crps_from_terms, crps_terms, observation_ranks

_QUANTITIES = ("crps_fair", "crps_standard", "crps_almost_fair", "sq_err", "variance", "weight")


def date_key(date) -> str:
    """A JSON-safe, sortable string for a date (str, datetime, np.datetime64)."""
    if isinstance(date, str):
        return date
    if isinstance(date, _dt.datetime | _dt.date | np.datetime64):
        return str(np.datetime64(date, "s"))
    return str(date)


class ScoreAccumulator:
    """Accumulate scores of ensembles (M, V, N) against observations (V, N), date by date.

    variables:    V names, the order of the V axis
    regions:      Regions with (N,) masks over the full grid
    area_weights: (N,) cell weights of the full grid
    n_members:    M, required of every update
    alpha:        α of the almost-fair CRPS (ε = (1 − α)/M)
    seed:         seed of the random rank tie-breaking
    chunk_cells:  cells processed at once inside `update` (bounds the float64 temporaries
                  to about 3·M·V·chunk_cells values)

    Observations that are NaN/inf are skipped (their cells get no weight for that variable
    and date); the members must be finite.
    """

    def __init__(self, variables: Sequence[str], regions: Sequence[Region],
                 area_weights: np.ndarray, n_members: int, alpha: float = 0.95,
                 seed: int = 0, chunk_cells: int = 1 << 16):
        self.variables = list(variables)
        self.regions = list(regions)
        self.area_weights = np.asarray(area_weights, dtype=np.float64)
        self.n_members = int(n_members)
        self.alpha = float(alpha)
        self.chunk_cells = int(chunk_cells)
        n = self.area_weights.shape[0]
        self._masks = np.stack([np.asarray(r.mask, dtype=bool) for r in self.regions]) \
            if self.regions else np.zeros((0, n), dtype=bool)
        if self._masks.shape[1] != n:
            raise ValueError("region masks and area weights cover different numbers of cells")
        self._rng = np.random.default_rng(seed)
        self._sums: dict[str, np.ndarray] = {}  # date → (Q, V, R) float64
        self._ranks = np.zeros((len(self.variables), len(self.regions), self.n_members + 1),
                               dtype=np.int64)

    def _fresh(self) -> np.ndarray:
        return np.zeros((len(_QUANTITIES), len(self.variables), len(self.regions)))

    def update(self, ens: np.ndarray, obs: np.ndarray, date, cells=None) -> None:
        """Add one date: ens (M, V, n), obs (V, n). ``cells`` (slice or index array into the
        full grid, length n) says which cells these are; None means all N cells."""
        ens = np.asarray(ens)
        obs = np.asarray(obs, dtype=np.float64)
        m, v = self.n_members, len(self.variables)
        if ens.ndim != 3 or ens.shape[0] != m or ens.shape[1] != v or ens.shape[1:] != obs.shape:
            raise ValueError(f"expected ens ({m}, {v}, n) and obs ({v}, n); "
                             f"got {ens.shape} and {obs.shape}")
        sel = slice(None) if cells is None else cells
        w = self.area_weights[sel]
        masks = self._masks[:, sel]
        if w.shape[0] != obs.shape[1]:
            raise ValueError(f"{obs.shape[1]} cells given but `cells` selects {w.shape[0]}")
        sums = self._sums.setdefault(date_key(date), self._fresh())
        for lo in range(0, obs.shape[1], self.chunk_cells):  # bounds the temporaries
            hi = min(lo + self.chunk_cells, obs.shape[1])
            self._add(sums, ens[:, :, lo:hi], obs[:, lo:hi], w[lo:hi], masks[:, lo:hi])

    def _add(self, sums, ens, obs, w, masks) -> None:
        """Accumulate one chunk: ens (M, V, c), obs (V, c), w (c,), masks (R, c)."""
        m, v = self.n_members, len(self.variables)
        valid = np.isfinite(obs)  # missing observations are left out (per variable)
        obs = np.where(valid, obs, 0.0)
        skill, pair = crps_terms(ens, obs)
        if m > 1:
            fair, nrg, fair_af = (crps_from_terms(skill, pair, m, e, self.alpha)
                                  for e in ("fair", "nrg", "almost_fair"))
        else:  # a deterministic forecast: every CRPS is its MAE (pair is 0)
            fair = nrg = fair_af = skill
        mean = np.zeros_like(obs)
        for i in range(m):
            mean += ens[i]
        mean /= m
        sq_err = (mean - obs) ** 2
        variance = np.zeros_like(obs)
        if m > 1:
            for i in range(m):
                variance += (np.asarray(ens[i], dtype=np.float64) - mean) ** 2
            variance /= m - 1
        wm = masks * w  # (R, c)
        for q, values in enumerate((fair, nrg, fair_af, sq_err, variance)):
            sums[q] += np.where(valid, values, 0.0) @ wm.T
        sums[-1] += valid @ wm.T
        ranks = observation_ranks(ens, obs, self._rng)
        for r in range(len(self.regions)):
            for k in range(v):
                keep = masks[r] & valid[k]
                self._ranks[k, r] += np.bincount(ranks[k][keep], minlength=m + 1)

    def merge(self, other: ScoreAccumulator) -> ScoreAccumulator:
        """Add ``other``'s sums (other cells and/or other dates) into this one; returns self."""
        if (other.variables != self.variables or other.n_members != self.n_members
                or [r.name for r in other.regions] != [r.name for r in self.regions]
                or other.alpha != self.alpha):
            raise ValueError("cannot merge accumulators of different variables, regions, "
                             "member counts or alpha")
        for key, sums in other._sums.items():
            self._sums.setdefault(key, self._fresh())
            self._sums[key] += sums
        self._ranks += other._ranks
        return self

    @property
    def dates(self) -> list[str]:
        return sorted(self._sums)

    def result(self) -> dict:
        """variable → region → {crps_fair, crps_standard, crps_almost_fair, rmse, spread,
        spread_skill, rank_histogram, n_dates, area_fraction, per_date: {date → {crps_fair,
        crps_almost_fair, rmse, spread}}}; plain floats/ints/lists only (JSON-safe).

        area_fraction is the mean over dates of the share of the region's area that was
        covered by updates (1.0 when every cell of every date was seen)."""
        dates = self.dates
        m = self.n_members
        region_w = self._masks.astype(np.float64) @ self.area_weights  # (R,)
        stack = np.stack([self._sums[d] for d in dates]) if dates else \
            np.zeros((0,) + self._fresh().shape)  # (D, Q, V, R)
        weight = stack[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            per_date = stack[:, :-1] / weight[:, None]  # (D, Q-1, V, R)
        out: dict = {}
        for k, var in enumerate(self.variables):
            out[var] = {}
            for r, region in enumerate(self.regions):
                pd = per_date[:, :, k, r]
                res = {}
                if dates:
                    with np.errstate(invalid="ignore"):  # dates without valid cells skipped
                        covered = weight[:, k, r] > 0
                        mean = pd[covered].mean(axis=0) if covered.any() \
                            else np.full(pd.shape[1], np.nan)
                    rmse, spread = np.sqrt(mean[3]), np.sqrt(mean[4])
                    res.update(crps_fair=mean[0], crps_standard=mean[1],
                               crps_almost_fair=mean[2], rmse=rmse, spread=spread,
                               spread_skill=np.sqrt((m + 1.0) / m) * spread / rmse
                               if rmse > 0 else float("nan"))
                    res = {key: float(val) for key, val in res.items()}
                res["rank_histogram"] = [int(c) for c in self._ranks[k, r]]
                res["n_dates"] = len(dates)
                res["area_fraction"] = float(np.mean(weight[:, k, r]) / region_w[r]) \
                    if dates else 0.0
                res["per_date"] = {
                    d: {"crps_fair": float(pd[i, 0]), "crps_almost_fair": float(pd[i, 2]),
                        "rmse": float(np.sqrt(pd[i, 3])), "spread": float(np.sqrt(pd[i, 4]))}
                    for i, d in enumerate(dates)}
                out[var][region.name] = res
        return out
