"""Do the LR and HR stores describe the same atmospheric state?

HR is coarse-grained onto the LR grid (area-weighted average of the HR cells nearest each LR
cell) and compared with LR, per variable, on a few dates spread over the record:

    correlation  of anomalies: each field minus its per-cell mean over the checked dates
                 (with one date: minus its area mean) — a time shift or a spatial shift of one
                 store decorrelates the anomalies even when climatology alone would correlate
    bias         |area-mean(coarse(HR) − LR)| / std(LR)

Thresholds come from `data.min_correlation` and `data.max_bias`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcds.data.dates import iso
from hpcds.data.paired import PairedDataset
from hpcds.errors import DataCheckError
from hpcds.grids import coarsening_matrix


@dataclass(frozen=True)
class VariableAlignment:
    variable: str
    correlation: float
    bias: float  # in units of the LR standard deviation
    ok: bool


def check_dates(n_dates: int, n_checked: int) -> np.ndarray:
    """Indices of up to `n_checked` dates spread evenly over the record."""
    return np.unique(np.linspace(0, n_dates - 1, min(n_checked, n_dates)).round().astype(int))


def alignment_scores(ds: PairedDataset, date_indices: np.ndarray, min_correlation: float,
                     max_bias: float, progress=None) -> list[VariableAlignment]:
    """Per-variable scores of coarse(HR) against LR; `ds` must cover every HR cell."""
    if ds.hr_cells != (0, ds.hr_grid.size):
        raise ValueError("alignment needs the whole HR grid, not a shard")
    coarsen, covered = coarsening_matrix(ds.hr_grid, ds.lr_grid)  # (n_lr, n_hr)
    lr_cells = np.flatnonzero(covered)
    coarsen = coarsen[lr_cells]
    weights = ds.lr_grid.area_weights[lr_cells]
    weights = weights / weights.sum()
    coarse, lr = [], []
    for i in (progress(date_indices) if progress else date_indices):
        hr_values = ds.read_hr(int(i)).astype(np.float64)  # (n_var, n_hr)
        coarse.append(np.asarray(coarsen @ hr_values.T).T)
        lr.append(ds.read_lr(int(i), lr_cells).astype(np.float64))
    coarse_a, lr_a = np.stack(coarse), np.stack(lr)  # (dates, n_var, n_cells)
    return [_score(name, coarse_a[:, v], lr_a[:, v], weights, min_correlation, max_bias)
            for v, name in enumerate(ds.variables)]


def _score(name, coarse, lr, weights, min_correlation, max_bias) -> VariableAlignment:
    """coarse, lr: (dates, cells); weights: (cells,) summing to 1."""
    if coarse.shape[0] > 1:
        a, b = coarse - coarse.mean(axis=0), lr - lr.mean(axis=0)
    else:
        a, b = coarse - coarse @ weights, lr - lr @ weights
    cov = ((a * b) @ weights).sum()
    var_a, var_b = ((a * a) @ weights).sum(), ((b * b) @ weights).sum()
    correlation = float(cov / np.sqrt(var_a * var_b)) if var_a > 0 and var_b > 0 else (
        1.0 if np.allclose(coarse, lr) else 0.0)
    lr_std = float(np.sqrt((((lr - (lr @ weights).mean()) ** 2) @ weights).mean()))
    bias = float(abs(((coarse - lr) @ weights).mean()) / max(lr_std, 1e-12))
    ok = correlation >= min_correlation and bias <= max_bias
    return VariableAlignment(name, correlation, bias, ok)


def require_aligned(scores: list[VariableAlignment], ds: PairedDataset, n_dates: int,
                    min_correlation: float, max_bias: float) -> None:
    bad = [s for s in scores if not s.ok]
    if bad:
        detail = ", ".join(f"{s.variable} correlation {s.correlation:.2f} bias {s.bias:.2f}σ"
                           for s in bad)
        raise DataCheckError(
            f"LR and HR stores are not aligned: {detail} (need correlation ≥ "
            f"{min_correlation} and bias ≤ {max_bias}σ; coarse-grained HR vs LR on {n_dates} "
            f"dates from {iso(ds.dates[0])}): check that both stores hold the same dates, "
            "variables and grids (a time or space shift?)")
