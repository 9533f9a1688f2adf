"""Streaming per-variable statistics, mergeable across ranks and shards.

Each ``update`` reduces one batch in float64 with a two-pass mean / sum of squared deviations,
and folds it into the running state with the parallel update of Chan, Golub & LeVeque (1979):

    n = n_a + n_b,   δ = mean_b − mean_a,   mean = mean_a + δ·n_b/n,
    M2 = M2_a + M2_b + δ²·n_a·n_b/n

so the variance never comes from ``squares/n − mean²``, which cancels catastrophically for
fields like geopotential or pressure (values ~1e5 with small variance). ``merge`` applies the
same update to a whole other ``RunningStats``, which is how ranks or shards that each saw a part
of the data combine into the statistics of the whole.

The running mean is held relative to a per-variable shift K (a mean of the first batch), i.e.
the state is the statistics of x − K. With the means near 0 instead of near 1e5, their rounding
errors (and hence those of δ) are relative to the spread, not to the offset, so the result
does not depend on how the data were split to ~1e-14, where an unshifted mean would
carry the offset's ~1e-11 absolute rounding into every δ.

The state also keeps ``sums`` and ``squares`` (Σw·x, Σw·x²) and ``has_nans`` because
anemoi-datasets stores them beside mean/stdev/minimum/maximum; they are informational only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

from hpcds.atomic import atomic_write_text

_STATE = ("count", "shift", "shifted_mean", "m2", "minimum", "maximum", "sums", "squares")


class RunningStats:
    """Per-variable count, mean, M2, minimum, maximum, sums, squares and has_nans (float64).

    Conventions:
      * NaN marks a missing value: it is excluded from every statistic and sets ``has_nans``.
        ±inf is a value like any other (and makes mean/stdev non-finite).
      * Weights are frequency weights: a value with weight w counts as w observations, so
        ``count = Σw``, ``mean = Σw·x / Σw`` and ``stdev = sqrt(Σw·(x − mean)² / Σw)``
        (the population formula). A value with weight 0 contributes nothing, not even to
        minimum/maximum — that is how a mask is expressed.
      * A variable that has seen no (weighted) values has count 0 and NaN mean, stdev,
        minimum and maximum.
    """

    def __init__(self, variables: Sequence[str]):
        self.variables = list(variables)
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"duplicate variable names in {self.variables}")
        n = len(self.variables)
        self.count = np.zeros(n)
        self._shift = np.zeros(n)  # K: set from the first batch a variable has values in
        self._mean = np.zeros(n)  # mean of x − K; 0, not NaN, while count == 0 (branch-free)
        self._m2 = np.zeros(n)
        self._min = np.full(n, np.inf)  # identities of min/max, reported as NaN while empty
        self._max = np.full(n, -np.inf)
        self.sums = np.zeros(n)
        self.squares = np.zeros(n)
        self.has_nans = np.zeros(n, dtype=bool)

    # ---------------------------------------------------------------- updates

    def update(
        self,
        values: np.ndarray,
        variable_axis: int = 0,
        weights: np.ndarray | None = None,
    ) -> None:
        """Fold a batch into the statistics.

        values:        any real array with the variables along `variable_axis`, e.g.
                       (variable, cell) or (time, variable, ensemble, cell) with axis 1.
        variable_axis: the axis of `values` that indexes ``self.variables``.
        weights:       optional non-negative weights broadcastable to `values`, e.g. per-cell
                       area weights of shape (cell,) when cells are the last axis.
        """
        x = np.asarray(values, dtype=np.float64)
        n_var = len(self.variables)
        if x.ndim == 0 or x.shape[variable_axis] != n_var:
            raise ValueError(
                f"values of shape {x.shape} have no axis {variable_axis} of length {n_var} "
                f"(the number of variables)"
            )
        w = None
        if weights is not None:
            w = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape)
            if not np.all(np.isfinite(w) & (w >= 0)):
                raise ValueError("weights must be finite and non-negative")
            w = np.moveaxis(w, variable_axis, 0).reshape(n_var, -1)
        x = np.moveaxis(x, variable_axis, 0).reshape(n_var, -1)
        with np.errstate(invalid="ignore"):  # ±inf values make NaN statistics, as documented
            self._update(x, w)

    def _update(self, x: np.ndarray, w: np.ndarray | None) -> None:
        """`x`: (variable, n) float64; `w`: None or (variable, n) float64 weights."""
        n_var = x.shape[0]

        nan = np.isnan(x)
        self.has_nans |= nan.any(axis=1)
        if nan.any():  # zero the missing values' weights (and values) rather than compacting
            w = np.where(nan, 0.0, 1.0 if w is None else w)
            x = np.where(nan, 0.0, x)

        # numpy's sum along a contiguous axis is pairwise, so its rounding error grows like
        # log(n) rather than n; einsum/dot would accumulate sequentially
        if w is None:
            n_b = np.full(n_var, float(x.shape[1]))
            sums = x.sum(axis=1)
            squares = np.square(x).sum(axis=1)
        else:
            n_b = w.sum(axis=1)
            sums = (w * x).sum(axis=1)
            squares = (w * np.square(x)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_raw = np.where(n_b > 0, sums / n_b, 0.0)
        first = (self.count == 0) & (n_b > 0) & np.isfinite(mean_raw)
        self._shift = np.where(first, mean_raw, self._shift)

        # x − K is exact for values within a factor 2 of K (Sterbenz), so the shifted batch
        # mean and the deviations about it keep full precision relative to the spread
        xs = x - self._shift[:, None]
        shifted_sums = xs.sum(axis=1) if w is None else (w * xs).sum(axis=1)
        mean_b = shifted_sums / np.where(n_b > 0, n_b, 1.0)
        xs -= mean_b[:, None]
        np.square(xs, out=xs)
        if w is not None:
            xs *= w
        m2_b = xs.sum(axis=1)
        del xs

        self._combine(n_b, mean_b, m2_b)
        self.sums += sums
        self.squares += squares
        if x.shape[1] == 0:
            return
        if w is None:
            lo, hi = x.min(axis=1), x.max(axis=1)
        else:
            used = w > 0
            lo = np.where(used, x, np.inf).min(axis=1)
            hi = np.where(used, x, -np.inf).max(axis=1)
        self._min = np.minimum(self._min, lo)
        self._max = np.maximum(self._max, hi)

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold in `other`: statistics of disjoint data, same variables. Returns self."""
        if other.variables != self.variables:
            raise ValueError(f"cannot merge statistics of {other.variables} into {self.variables}")
        self._shift = np.where(self.count == 0, other._shift, self._shift)
        # re-express other's mean relative to our shift; K_b − K_a is exact for nearby shifts
        self._combine(other.count, other._mean + (other._shift - self._shift), other._m2)
        self.sums += other.sums
        self.squares += other.squares
        self._min = np.minimum(self._min, other._min)
        self._max = np.maximum(self._max, other._max)
        self.has_nans |= other.has_nans
        return self

    def _combine(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Chan et al.'s pairwise update of (count, mean, M2)."""
        n_a = self.count
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            frac_b = np.where(n > 0, n_b / n, 0.0)
        delta = mean_b - self._mean
        self._mean = self._mean + delta * frac_b
        self._m2 = self._m2 + m2_b + delta * delta * n_a * frac_b
        self.count = n

    # ------------------------------------------------------------ statistics

    @property
    def mean(self) -> np.ndarray:
        """(variable,) float64, NaN where count is 0."""
        return np.where(self.count > 0, self._shift + self._mean, np.nan)

    @property
    def variance(self) -> np.ndarray:
        """(variable,) float64 population variance M2 / count, NaN where count is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, np.maximum(self._m2, 0.0) / self.count, np.nan)

    @property
    def stdev(self) -> np.ndarray:
        """(variable,) float64 population standard deviation, NaN where count is 0."""
        return np.sqrt(self.variance)

    @property
    def minimum(self) -> np.ndarray:
        """(variable,) float64, NaN where count is 0."""
        return np.where(self.count > 0, self._min, np.nan)

    @property
    def maximum(self) -> np.ndarray:
        """(variable,) float64, NaN where count is 0."""
        return np.where(self.count > 0, self._max, np.nan)

    def arrays(self) -> dict[str, np.ndarray]:
        """The eight per-variable arrays of an anemoi-datasets store, keyed by their array names."""
        return {
            "mean": self.mean,
            "stdev": self.stdev,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "sums": self.sums.copy(),
            "squares": self.squares.copy(),
            "count": self.count.copy(),
            "has_nans": self.has_nans.copy(),
        }

    # --------------------------------------------------------- serialisation

    def to_dict(self) -> dict:
        """JSON-safe state: lists per key; non-finite floats as the strings "nan", "inf", "-inf".

        ``mean`` and ``stdev`` are included for readers of the file; ``from_dict`` rebuilds the
        state from ``shift`` and ``shifted_mean`` (mean = shift + shifted_mean) and ``m2``.
        """
        state = {
            "count": self.count,
            "mean": self.mean,
            "stdev": self.stdev,
            "shift": self._shift,
            "shifted_mean": self._mean,
            "m2": self._m2,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "sums": self.sums,
            "squares": self.squares,
        }
        out: dict = {"variables": list(self.variables)}
        out.update({k: [_encode(v) for v in a] for k, a in state.items()})
        out["has_nans"] = [bool(v) for v in self.has_nans]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> RunningStats:
        """Inverse of ``to_dict``."""
        missing = [k for k in ("variables", *_STATE, "has_nans") if k not in d]
        if missing:
            raise ValueError(f"statistics dict lacks {missing}")
        stats = cls(d["variables"])
        a = {k: np.array([float(v) for v in d[k]], dtype=np.float64) for k in _STATE}
        empty = a["count"] <= 0
        stats.count = a["count"]
        stats._shift = a["shift"]
        stats._mean = np.where(empty, 0.0, a["shifted_mean"])
        stats._m2 = np.where(empty, 0.0, a["m2"])
        stats._min = np.where(empty, np.inf, a["minimum"])
        stats._max = np.where(empty, -np.inf, a["maximum"])
        stats.sums = a["sums"]
        stats.squares = a["squares"]
        stats.has_nans = np.array([bool(v) for v in d["has_nans"]], dtype=bool)
        return stats

    def save_json(self, path: str | os.PathLike) -> None:
        """Write ``to_dict()`` as JSON, atomically (temporary sibling + ``os.replace``)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> RunningStats:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __repr__(self) -> str:
        return f"RunningStats({self.variables}, count={self.count.tolist()})"


def _encode(v: float) -> float | str:
    """A float as JSON allows it: finite as is, NaN/±inf as the strings float() parses back."""
    v = float(v)
    return v if math.isfinite(v) else str(v)
