"""perf/law_variance.py's per-band figures against their expectations: members drawn with
twice the law's standard deviation have 4× its spread power in every band, and a bias added to
their mean shows as the bias's power over the law's spread, the sampling noise taken out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hpcds.config.schema import GridConfig
from hpcds.evaluate.spectra import spectrum_for_grid
from hpcds.grids.spec import make_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import law_variance  # noqa: E402


def test_band_power_spread_and_bias():
    grid = make_grid(GridConfig(name="1.0/1.0", area="12/0/0/12"))  # 13 x 13 cells
    n, draws = grid.size, 600
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((1, 1, 1, n))
    law = mean + rng.standard_normal((draws, 1, 1, n))  # (L, D, V, N) white, variance 1
    ens = mean + 2.0 * rng.standard_normal((draws, 1, 1, n))
    bias = 1.5 * np.cos(np.arange(n) * 0.7)  # a fixed field added to every member
    edges = [0.0, 0.01, 0.02, np.inf]
    spread, error = law_variance.band_power(ens, law, grid, edges)
    assert spread.shape == error.shape == (1, 3)
    np.testing.assert_allclose(spread, 4.0, rtol=0.08)
    np.testing.assert_allclose(error, 0.0, atol=0.03)
    spread_b, error_b = law_variance.band_power(ens + bias, law, grid, edges)
    np.testing.assert_allclose(spread_b, spread)  # a bias moves no member off the mean
    k, p_bias, _ = spectrum_for_grid(bias[None], grid)
    _, p_law, _ = spectrum_for_grid((law - law.mean(0))[:, 0, 0], grid)
    p_law = p_law.sum(0) / (draws - 1)
    expect = [p_bias[0][(k >= a) & (k < b)].sum() / p_law[(k >= a) & (k < b)].sum()
              for a, b in zip(edges[:-1], edges[1:])]
    assert max(expect) > 0.2  # the bias is visible in some band
    np.testing.assert_allclose(error_b[0] - error[0], expect, rtol=0.15)
