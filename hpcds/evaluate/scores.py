"""Probabilistic scores of ensembles: CRPS estimators, spread/skill, rank histograms.

Conventions (all functions): ``ens`` has shape (M, ..., N), members first; ``obs`` has shape
(..., N); ``w`` are optional area weights (N,) over the last (cell) axis. Everything is
accumulated in float64 whatever the input dtype.

CRPS estimators, for members x_1..x_M and observation y, with the skill term
S = (1/M) Σ_i |x_i − y| and the pair sum D = Σ_{i,j} |x_i − x_j|:

- "nrg"  (standard / energy form, CRPS of the empirical distribution):  S − D / (2M²)
- "fair" (Ferro 2014; unbiased for the CRPS of the distribution the members are drawn
  from):  S − D / (2M(M−1))
- "almost_fair" (Lang et al. 2024, "AIFS-CRPS", as in Anemoi):
  S − (1 − ε) D / (2M(M−1)) with ε = (1 − α)/M. It is exactly the blend
  α·fair + (1 − α)·nrg: α = 1 gives "fair", α = 0 gives "nrg".
- "pwm" (probability-weighted moments): algebraically identical to "fair".
- "qd" / "int" (quantile decomposition / integral form): algebraically identical to "nrg".
- "akr" / "akr_circperm" (approximate kernel representation): S − (1/(2M)) Σ_i |x_i − x_{i−k}|
  with circular index and k = 1 or k = M // 2; depends on the member order.

D is computed in O(M log M) per point by sorting: D = 2 Σ_i (2i − M − 1) x_(i) for the
sorted members x_(1) ≤ … ≤ x_(M), never with an (M, M) array.
"""

from __future__ import annotations

import numpy as np

ESTIMATORS = ("fair", "nrg", "almost_fair", "pwm", "qd", "int", "akr", "akr_circperm")


def _as_f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _check(ens: np.ndarray, obs: np.ndarray) -> None:
    if ens.ndim < 1 or ens.shape[1:] != obs.shape:
        raise ValueError(f"ens must be (M, *obs.shape); got ens {ens.shape}, obs {obs.shape}")


def crps_terms(ens, obs) -> tuple[np.ndarray, np.ndarray]:
    """Skill term S = mean_i |x_i − y| and pair sum D = Σ_{i,j} |x_i − x_j|, both (..., N).

    ens (M, ..., N), obs (..., N). D uses the sorted-members identity (no (M, M) array).
    """
    ens = np.asarray(ens)
    obs = _as_f64(obs)
    _check(ens, obs)
    m = ens.shape[0]
    skill = np.zeros(obs.shape, dtype=np.float64)
    for i in range(m):  # member loop: no (M, ..., N) temporary besides the sorted copy
        skill += np.abs(_as_f64(ens[i]) - obs)
    skill /= m
    srt = np.sort(_as_f64(ens), axis=0)
    pair = np.zeros(obs.shape, dtype=np.float64)
    for i in range(m):  # 0-based i: coefficient 2(i+1) − M − 1 = 2i − M + 1
        coef = 2 * i - m + 1
        if coef:
            pair += coef * srt[i]
    pair *= 2.0
    return skill, pair


def crps_ensemble(ens, obs, estimator: str = "fair", alpha: float = 0.95) -> np.ndarray:
    """Per-point CRPS (..., N) of the ensemble ``ens`` (M, ..., N) against ``obs`` (..., N).

    ``estimator`` is one of ESTIMATORS (see the module docstring for the exact formulas);
    ``alpha`` is used only by "almost_fair". "fair", "pwm" and "almost_fair" need M ≥ 2
    (M = 1 gives NaN for "fair"/"pwm", and "almost_fair" is then only defined for α = 0).
    """
    ens = np.asarray(ens)
    obs = _as_f64(obs)
    _check(ens, obs)
    m = ens.shape[0]
    if estimator in ("akr", "akr_circperm"):
        shift = 1 if estimator == "akr" else m // 2
        skill = np.zeros(obs.shape, dtype=np.float64)
        near = np.zeros(obs.shape, dtype=np.float64)
        for i in range(m):
            xi = _as_f64(ens[i])
            skill += np.abs(xi - obs)
            near += np.abs(xi - _as_f64(ens[(i - shift) % m]))
        return (skill - 0.5 * near) / m
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown CRPS estimator {estimator!r}; expected one of {ESTIMATORS}")
    skill, pair = crps_terms(ens, obs)
    return crps_from_terms(skill, pair, m, estimator, alpha)


def crps_from_terms(skill: np.ndarray, pair: np.ndarray, m: int, estimator: str = "fair",
                    alpha: float = 0.95) -> np.ndarray:
    """The CRPS of ``m`` members from their `crps_terms` S and D, for the estimators that
    depend on the members only through S and D (all but "akr"/"akr_circperm"). The one place
    these formulas live: `crps_ensemble` and the streaming `ScoreAccumulator` both use it."""
    if estimator in ("nrg", "qd", "int"):
        return skill - pair / (2.0 * m * m)
    if estimator in ("fair", "pwm"):
        with np.errstate(divide="ignore", invalid="ignore"):
            return skill - pair / (2.0 * m * (m - 1)) if m > 1 else skill * np.nan
    if estimator == "almost_fair":
        if m == 1:
            return skill if alpha == 0 else skill * np.nan
        eps = (1.0 - alpha) / m
        return skill - (1.0 - eps) * pair / (2.0 * m * (m - 1))
    raise ValueError(f"CRPS estimator {estimator!r} is not a function of S and D; expected one "
                     f"of {tuple(e for e in ESTIMATORS if not e.startswith('akr'))}")


def weighted_mean(values, w=None) -> np.ndarray:
    """Area-weighted mean over the last axis: values (..., N), w (N,) or None → (...) float64."""
    values = _as_f64(values)
    if w is None:
        return values.mean(axis=-1)
    w = _as_f64(w)
    if w.shape != values.shape[-1:]:
        raise ValueError(f"weights {w.shape} do not match cells {values.shape[-1:]}")
    return (values @ w) / w.sum()


def _reduce(per_point, w, reduce_leading: bool):
    """weighted mean over N, then (optionally) plain mean over all leading axes."""
    per_field = weighted_mean(per_point, w)
    return float(np.mean(per_field)) if reduce_leading else per_field


def ensemble_mean_rmse(ens, obs, w=None, reduce_leading: bool = True):
    """RMSE of the ensemble mean: sqrt(mean over ... of the w-weighted mean over N of
    (x̄ − y)²). Returns a float, or (...) per leading index if ``reduce_leading`` is False
    (then each value is the RMSE of one field)."""
    ens = np.asarray(ens)
    obs = _as_f64(obs)
    _check(ens, obs)
    err2 = (_as_f64(ens).mean(axis=0) - obs) ** 2
    return np.sqrt(_reduce(err2, w, reduce_leading))


def ensemble_variance(ens) -> np.ndarray:
    """Unbiased (ddof=1) ensemble variance per point: ens (M, ..., N) → (..., N)."""
    return _as_f64(ens).var(axis=0, ddof=1)


def ensemble_spread(ens, w=None, reduce_leading: bool = True):
    """Spread: sqrt of the w-weighted mean (over N, then over ...) of the unbiased ensemble
    variance. Float, or (...) per field if ``reduce_leading`` is False."""
    return np.sqrt(_reduce(ensemble_variance(ens), w, reduce_leading))


def spread_skill_ratio(ens, obs, w=None, reduce_leading: bool = True):
    """sqrt((M+1)/M) · spread / RMSE(ensemble mean).

    For an ensemble exchangeable with the truth, E[(x̄ − y)²] = (M+1)/M · σ², while the
    unbiased ensemble variance estimates σ²; with the factor a calibrated ensemble gives 1
    (Fortin et al. 2014). > 1 over-dispersive, < 1 under-dispersive.
    """
    m = np.asarray(ens).shape[0]
    spread = ensemble_spread(ens, w, reduce_leading)
    rmse = ensemble_mean_rmse(ens, obs, w, reduce_leading)
    return np.sqrt((m + 1.0) / m) * spread / rmse


def observation_ranks(ens, obs, rng: np.random.Generator | None = None) -> np.ndarray:
    """Rank in 0..M of each observation among the members, (..., N) int64.

    rank = #{x_i < y} + U where U is uniform on 0..#{x_i == y}: an observation tied with k
    members takes one of the k + 1 tied positions at random. NaN observations get rank −1.
    """
    ens = np.asarray(ens)
    obs = _as_f64(obs)
    _check(ens, obs)
    rng = np.random.default_rng() if rng is None else rng
    below = np.zeros(obs.shape, dtype=np.int64)
    ties = np.zeros(obs.shape, dtype=np.int64)
    for i in range(ens.shape[0]):
        xi = _as_f64(ens[i])
        below += xi < obs
        ties += xi == obs
    ranks = below + np.floor(rng.random(obs.shape) * (ties + 1)).astype(np.int64)
    ranks[np.isnan(obs)] = -1
    return ranks


def rank_histogram(ens, obs, rng: np.random.Generator | None = None) -> np.ndarray:
    """Counts (M+1,) int64 of the observation ranks (random tie-breaking, see
    `observation_ranks`) over all points of ``obs`` (..., N); NaN observations are skipped."""
    m = np.asarray(ens).shape[0]
    ranks = observation_ranks(ens, obs, rng).ravel()
    return np.bincount(ranks[ranks >= 0], minlength=m + 1).astype(np.int64)
