"""Extremes of downscaled fields: tail quantiles with bootstrap intervals, Q-Q data,
exceedance frequencies, and a streaming top-k accumulator for quantiles over many dates.

Quantile definition used throughout (the "Hazen" plotting position, numpy's
``method="hazen"``): sort the values x_(1) <= … <= x_(n) with weights w_i (all 1 when not
given), W = Σ w_i, C_i = Σ_{j<=i} w_j; the i-th value sits at probability
p_i = (C_i − w_i/2)/W, and the q-quantile is the linear interpolation of (p_i, x_(i)) at q,
clipped to x_(1) below p_1 and to x_(n) above p_n. With equal weights p_i = (i − 1/2)/n and
this is exactly ``numpy.quantile(x, q, method="hazen")``. Area weights (e.g.
``Grid.area_weights``) make it the quantile of the area-weighted distribution.
"""

from __future__ import annotations

import numpy as np

_CHUNK_ELEMENTS = 2 ** 23  # bootstrap resamples are drawn in chunks of about this many values


def weighted_quantile(values: np.ndarray, qs, weights: np.ndarray | None = None
                      ) -> np.ndarray:
    """Hazen quantiles (see the module docstring) of values (n,) at qs (nq,) → (nq,)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    q = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    if weights is None:
        return np.quantile(x, q, method="hazen")
    w = np.asarray(weights, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    c = np.cumsum(ws)
    return np.interp(q, (c - ws / 2.0) / c[-1], xs)


def _rows_quantile(x: np.ndarray, w: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    """Quantiles of each row of x (b, n) (weights w (b, n) or None) → (b, nq)."""
    if w is None:
        return np.quantile(x, q, axis=1, method="hazen").T
    order = np.argsort(x, axis=1)
    xs = np.take_along_axis(x, order, axis=1)
    ws = np.take_along_axis(w, order, axis=1)
    c = np.cumsum(ws, axis=1)
    p = (c - ws / 2.0) / c[:, -1:]
    return np.stack([np.interp(q, p[r], xs[r]) for r in range(x.shape[0])])


def quantiles_with_bootstrap(samples: np.ndarray, qs=(0.99, 0.999, 0.9999), n_boot: int = 200,
                             rng: np.random.Generator | int | None = None,
                             area_weights: np.ndarray | None = None, level: float = 0.9
                             ) -> dict[float, tuple[float, float, float]]:
    """Tail quantiles of samples (n,) with percentile-bootstrap intervals.

    Returns {q: (estimate, lo, hi)}: estimate = `weighted_quantile`, (lo, hi) the
    ((1 − level)/2, (1 + level)/2) percentiles of the estimate over `n_boot` resamples of the
    n samples drawn with replacement (each keeping its area weight). Cost O(n_boot·n); note
    that a bootstrap cannot see beyond the sample maximum, so intervals for q close to
    1 − 1/n are too narrow.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    w = None if area_weights is None else np.asarray(area_weights, dtype=np.float64).ravel()
    q = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    rng = np.random.default_rng(rng)
    n = x.size
    est = weighted_quantile(x, q, w)
    boots = []
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        boots.append(_rows_quantile(x[idx], None if w is None else w[idx], q))
    b = np.concatenate(boots)
    lo = np.quantile(b, (1.0 - level) / 2.0, axis=0)
    hi = np.quantile(b, (1.0 + level) / 2.0, axis=0)
    return {float(qi): (float(e), float(a), float(c)) for qi, e, a, c in zip(q, est, lo, hi)}


def qq_probabilities(n_points: int = 100, n_min: int = 1000) -> np.ndarray:
    """(n_points,) increasing probabilities 1 − logspace(0, −log10(n_min), n_points): from 0
    (the minimum) to 1 − 1/n_min, with most points in the upper tail."""
    return 1.0 - np.logspace(0.0, -np.log10(max(int(n_min), 2)), int(n_points))


def qq_data(forecast: np.ndarray, truth: np.ndarray, n_points: int = 100
            ) -> tuple[np.ndarray, np.ndarray]:
    """Q-Q plot data: forecast (n_f,), truth (n_t,) → (q_truth, q_forecast), each
    (n_points,), the Hazen quantiles of both at `qq_probabilities(n_points, min(n_f, n_t))`
    (the tail is followed as far as the smaller sample supports)."""
    f = np.asarray(forecast, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    p = qq_probabilities(n_points, min(f.size, t.size))
    return weighted_quantile(t, p), weighted_quantile(f, p)


def exceedance_frequencies(values: np.ndarray, thresholds, weights: np.ndarray | None = None
                           ) -> np.ndarray:
    """(n_thr,) (weighted) fraction of values strictly above each threshold.

    values (..., n) and weights broadcastable to values (e.g. area weights (n,)); all values
    are pooled. Weighted: Σ_{x_i > t} w_i / Σ w_i."""
    x = np.asarray(values, dtype=np.float64)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if weights is None:
        xs = np.sort(x.ravel())
        return 1.0 - np.searchsorted(xs, t, side="right") / xs.size
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape).ravel()
    order = np.argsort(x.ravel(), kind="stable")
    xs, c = x.ravel()[order], np.concatenate([[0.0], np.cumsum(w[order])])
    return 1.0 - c[np.searchsorted(xs, t, side="right")] / c[-1]


class TailSampler:
    """Streaming accumulator of the k largest values (with weights) and the totals.

    `update(values, weights=None)` any number of times (dates, members, ranks; `merge` joins
    two samplers), then `quantile(q)`: the Hazen quantile of everything seen, **exact** (the
    same number `weighted_quantile` gives on all the data) whenever the interpolation only
    involves kept values. Unweighted that holds for q >= 1 − (k − 1/2)/n (n = total count);
    `exact_from()` gives the bound for the data seen, and `quantile` raises ValueError below
    it. Memory O(k); each update costs O(k + batch).
    """

    def __init__(self, k: int = 10_000):
        if int(k) < 1:
            raise ValueError(f"k={k} must be >= 1")
        self.k = int(k)
        self.values = np.empty(0)
        self.weights = np.empty(0)
        self.count = 0
        self.total_weight = 0.0

    def update(self, values: np.ndarray, weights: np.ndarray | None = None) -> TailSampler:
        x = np.asarray(values, dtype=np.float64).ravel()
        w = (np.ones_like(x) if weights is None else
             np.broadcast_to(np.asarray(weights, dtype=np.float64),
                             np.shape(values)).ravel())
        return self._absorb(x, w, x.size, float(w.sum()))

    def merge(self, other: TailSampler) -> TailSampler:
        return self._absorb(other.values, other.weights, other.count, other.total_weight)

    def _absorb(self, x, w, count, total_weight) -> TailSampler:
        x = np.concatenate([self.values, x])
        w = np.concatenate([self.weights, w])
        if x.size > self.k:
            keep = np.argpartition(x, x.size - self.k)[x.size - self.k:]
            x, w = x[keep], w[keep]
        order = np.argsort(x, kind="stable")
        self.values, self.weights = x[order], w[order]
        self.count += int(count)
        self.total_weight += float(total_weight)
        return self

    def _positions(self) -> np.ndarray:
        """Hazen probabilities of the kept values: p_i = 1 − (S_i − w_i/2)/W, S_i the weight
        of kept values >= x_(i) (the top of the sorted order)."""
        suffix = np.cumsum(self.weights[::-1])[::-1]
        return 1.0 - (suffix - self.weights / 2.0) / self.total_weight

    def exact_from(self) -> float:
        """Smallest q answered exactly: the probability of the lowest kept value (0 when
        every value seen is kept)."""
        if self.count <= self.k:
            return 0.0
        return float(self._positions()[0])

    def quantile(self, qs) -> np.ndarray:
        """(nq,) quantiles at qs, each >= `exact_from()`."""
        q = np.atleast_1d(np.asarray(qs, dtype=np.float64))
        if self.count == 0:
            raise ValueError("TailSampler is empty: call update() first")
        if np.any(q < self.exact_from()):
            raise ValueError(f"q={q.min()} is below {self.exact_from():.6g}, the lowest "
                             f"quantile the top {self.k} of {self.count} values determine; "
                             "raise k")
        return np.interp(q, self._positions(), self.values)
