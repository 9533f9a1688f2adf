"""The per-variable value transform the diffusion model works in (data.log_transform).

    y = f(x) = log1p(x / ε)      ε > 0: the variable's offset, in its own units
    x = f⁻¹(y) = ε · expm1(y)
    y = x                        ε = 0 (every variable not in data.log_transform)

The model's target is the residual in y, f(x_HR) − f(interp(x_LR)), and a member is
f⁻¹(residual + f(interp(x_LR))). Why: precipitation's small-scale variability is
multiplicative — a wet LR cell's HR values scatter in proportion to its amount, a dry cell's
not at all — so in x its residual's variance spans orders of magnitude between cells, which a
stationary noise spectrum and an MSE loss treat as one size. In y a multiplicative factor is an
additive term of one size wherever it rains (the lognormal case exactly), and the heavy upper
tail is what f⁻¹ makes of a Gaussian one. ε sets where "wet" starts: values ≪ ε are treated
additively, values ≫ ε multiplicatively.

Arrays keep their layout: `axis` names the variable axis, offsets are (n_var,) float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hpcds.errors import DataCheckError


def log_offsets(variables: Sequence[str], log_transform: Mapping[str, float]) -> np.ndarray:
    """(n_var,) float64 ε per variable: data.log_transform's value, 0 (identity) for the rest.
    Names not in `variables` are ignored, as data.nonnegative's are."""
    return np.array([float(log_transform.get(v, 0.0)) for v in variables], np.float64)


def _apply(values: np.ndarray, offsets: np.ndarray, axis: int, fn) -> np.ndarray:
    """fn(values of variable v, ε_v) on each variable with ε_v > 0, the others unchanged."""
    y = np.asarray(values, np.float64)
    logged = np.flatnonzero(offsets > 0)
    if logged.size == 0:
        return y
    out = y.copy()
    index = [slice(None)] * y.ndim
    for v in logged:
        index[axis] = v
        out[tuple(index)] = fn(y[tuple(index)], offsets[v])
    return out


def forward(values: np.ndarray, offsets: np.ndarray, axis: int = 0) -> np.ndarray:
    """f(values) in float64; `values` has the variables on `axis`."""
    return _apply(values, offsets, axis, lambda x, eps: np.log1p(x / eps))


def inverse(values: np.ndarray, offsets: np.ndarray, axis: int = 0) -> np.ndarray:
    """f⁻¹(values) in float64 (never overflows: y is capped at float64's exp range)."""
    return _apply(values, offsets, axis, lambda y, eps: eps * np.expm1(np.minimum(y, 700.0)))


def check_domain(values: np.ndarray, offsets: np.ndarray, variables: Sequence[str],
                 where: str) -> None:
    """values (n_var, n): a value ≤ −ε of a log-transformed variable is a one-line
    DataCheckError naming it (log1p is undefined there)."""
    for v in np.flatnonzero(offsets > 0):
        low = float(np.min(values[v])) if values[v].size else 0.0
        if low <= -offsets[v]:
            raise DataCheckError(
                f"{variables[v]} holds {low:.4g} in {where}, but data.log_transform needs values "
                f"> −{offsets[v]:g} (its offset): fix the store or remove {variables[v]} from "
                "data.log_transform")
