"""Reference forecasts the diffusion ensemble is scored against, per date, in physical units.

Every baseline yields (M_b, V, N) float64 arrays on the HR grid (SFC order) for one date:

    interpolation   interp(x_LR): the LR state linearly interpolated to HR (1 member)
    deterministic   the conditional-mean regression checkpoint (diffusion.deterministic=true),
                    run through `hpcds.ensemble.generate` into its own store (1 member)
    oracle          on the benchmark only: exact draws of p(HR | LR) (`oracle_sample`), the
                    limit any ensemble of the same size can reach
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from hpcds.data.paired import PairedDataset
from hpcds.errors import UserError

BENCHMARK_GENERATOR = "hpcds.data.benchmark.generate_benchmark"


def interpolation(ds: PairedDataset, i: int) -> np.ndarray:
    """(1, V, N): interp(x_LR) of date i of `ds`."""
    return ds.interpolate(ds.read_lr(i))[None].astype(np.float64)


class Oracle:
    """Exact samples of p(HR | LR) of the benchmark the stores were built with."""

    def __init__(self, law, ds: PairedDataset, members: int, seed: int = 0):
        self.law, self.ds, self.members, self.seed = law, ds, int(members), int(seed)
        self._date_index = {d: j for j, d in enumerate(law.dates)}
        self._lr_index = None

    def __call__(self, i: int) -> np.ndarray | None:
        """(members, V, N) exact draws of p(HR | LR) for date i; None when the law lacks it."""
        from hpcds.data.benchmark import VARIABLES, oracle_sample
        from hpcds.data.cells import store_cells_for_grid

        date = self.ds.dates[i]
        j = self._date_index.get(date)
        if j is None:
            return None
        lr_store = self.ds.lr
        if self._lr_index is None:
            self._lr_index = store_cells_for_grid(lr_store, self.ds.lr_grid, "the LR store",
                                                  "check grid.lr")
        t = int(lr_store.time_index([date])[0])
        lr = lr_store.read(t, list(VARIABLES), cells=self._lr_index, ensemble=0)[0, :, 0]
        out = oracle_sample(self.law, lr.astype(np.float64), j, self.members, seed=self.seed)
        return out[:, [list(VARIABLES).index(v) for v in self.ds.variables]]


def make_oracle(cfg, ds: PairedDataset, members: int, seed: int = 0) -> Oracle | None:
    """The oracle when the LR store is the benchmark built with this config's law, else None."""
    prov = ds.lr.attrs.get("provenance") or {}
    if not isinstance(prov, dict) or prov.get("generator") != BENCHMARK_GENERATOR:
        return None
    if int(prov.get("seed", -1)) != int(cfg.benchmark.seed):
        return None
    try:
        from hpcds.data.benchmark import build_law

        law = build_law(cfg)
    except (UserError, OSError, ValueError):  # no terrain file, other grids: no oracle
        return None
    if law.geometry.hr.size != ds.hr_grid.size or law.geometry.lr.size != ds.lr_grid.size:
        return None
    return Oracle(law, ds, members, seed)


def deterministic_store(cfg, checkpoint: str | Path, out_dir: str | Path,
                        progress: bool = True) -> Path:
    """Run the regression checkpoint over every date into `out_dir/deterministic.zarr`
    (1 member, rebuilt each time: cheap) with `hpcds.ensemble.generate`; returns its path."""
    from hpcds.ensemble.generate import generate

    c = copy.deepcopy(cfg)
    path = Path(out_dir) / "deterministic.zarr"
    c.sampling.output = str(path)
    c.sampling.members = 1
    c.sampling.members_per_batch = 1
    generate(c, checkpoint=str(checkpoint), overwrite=True, progress=progress)
    return path
