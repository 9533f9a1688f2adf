"""`PairedDataset`: LR and HR stores paired on common dates, with the static fields (from
the forcings store or the HR store, data.static), for one HR shard.

A sample (date t, HR cells [a, b) of the SFC order) is

    cond     (n_var, b-a)  interp(x_LR) normalised with the LR store's per-variable statistics
    forcings (n_forc, b-a) orography, land-sea, sin/cos lat/lon, local solar time, day of year
    target   (n_var, b-a)  residual f(x_HR) − f(interp(x_LR)), normalised with residual statistics
                           (f: data.log_transform's log1p(x/ε) per variable, else the identity;
                           `hpcds.data.transform`)

Each model-parallel rank builds its own dataset for its cells: it reads only its HR cells and
the LR cells its interpolation rows touch. Statistics are shard-local `RunningStats` that the
caller merges across ranks (the distributed layer does that; one process merges nothing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpcds.atomic import atomic_write_text
from hpcds.config.schema import HpcdsConfig, NanPolicy, StaticConfig
from hpcds.data.cells import store_cells_for_grid
from hpcds.data.dates import DateReport, iso, match_dates, parse_date, parse_frequency
from hpcds.data.forcings import forcing_fields, static_forcings_from_store, static_store
from hpcds.data.stats import RunningStats
from hpcds.data.store import Store, open_store
from hpcds.data.transform import check_domain, log_offsets
from hpcds.data.transform import forward as transformed
from hpcds.errors import DataCheckError, StoreError
from hpcds.grids import Grid, cached_interpolation_matrix
from hpcds.grids.grid_cache import cached_grid

def check_variables(store: Store, variables: list[str], role: str) -> None:
    missing = [v for v in variables if v not in store.variables]
    if missing:
        raise DataCheckError(
            f"variables missing from the {role} store {store.path}: {', '.join(missing)} "
            f"(it has {', '.join(store.variables)}); set data.variables or fix the store"
        )


def require_finite(values: np.ndarray, variables: list[str], store: str, where: str,
                   fix: str) -> np.ndarray:
    """values (n_var, n_cells); a NaN is a one-line DataCheckError naming the variable."""
    bad = np.isnan(values)
    if bad.any():
        v = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataCheckError(f"NaN in {store}, variable {variables[v]}, {where} "
                             f"({int(bad[v].sum())} cells): {fix}")
    return values


@dataclass(frozen=True)
class Normalisation:
    """Per-variable (n_var,) float64 statistics; inputs use the LR store's, targets the
    residual's own (streamed over the dataset's dates) in the space of the per-variable
    transform whose offsets `log_offset` holds (0: identity; `hpcds.data.transform`)."""

    variables: tuple[str, ...]
    input_mean: np.ndarray
    input_std: np.ndarray
    residual_mean: np.ndarray
    residual_std: np.ndarray
    log_offset: np.ndarray | None = None  # None: no transform (a record from before it)

    def __post_init__(self):
        if self.log_offset is None:
            object.__setattr__(self, "log_offset", np.zeros(len(self.variables)))

    def apply(self, cond: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`PairedDataset.pair`'s (cond, residual), each (n_var, N), normalised as the
        network sees them (the model's inputs and targets), in their own dtype."""
        return ((cond - self.input_mean[:, None]) / self.input_std[:, None],
                (residual - self.residual_mean[:, None]) / self.residual_std[:, None])

    def to_dict(self) -> dict:
        return {"variables": list(self.variables),
                **{k: getattr(self, k).tolist() for k in
                   ("input_mean", "input_std", "residual_mean", "residual_std",
                    "log_offset")}}


class PairedDataset:
    def __init__(self, lr: Store, hr: Store, static_store: Store, *, lr_grid: Grid,
                 hr_grid: Grid, variables: list[str], report: DateReport, nan_policy: NanPolicy,
                 hr_cells: tuple[int, int] | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 static: StaticConfig | None = None,
                 log_transform: dict[str, float] | None = None):
        """static_store: where the static fields are read (`static_forcings_from_store`) as
        `static` (data.static) says; cache_dir: where this shard's interpolation rows are
        cached (None: built); log_transform: data.log_transform (variable → ε)."""
        for store, role in ((lr, "LR"), (hr, "HR")):
            check_variables(store, variables, role)
        self.lr, self.hr, self.static_store = lr, hr, static_store
        self.lr_grid, self.hr_grid = lr_grid, hr_grid
        self.variables = list(variables)
        self.log_offset = log_offsets(self.variables, log_transform or {})  # (n_var,) ε
        self.report = report
        self.nan_policy = nan_policy
        start, stop = hr_cells if hr_cells is not None else (0, hr_grid.size)
        self.hr_cells = (int(start), int(stop))
        self._lr_index = store_cells_for_grid(lr, lr_grid, "the LR store",
                                              f"set grid.lr to the store's grid ({lr.resolution})")
        self._hr_index = store_cells_for_grid(hr, hr_grid, "the HR store",
                                              f"set grid.hr to the store's grid ({hr.resolution})",
                                              cells=self.hr_cells)
        # (b-a, n_lr) rows of this shard; only the LR columns they touch are ever read
        interp = cached_interpolation_matrix(lr_grid, hr_grid, rows=self.hr_cells,
                                             cache_dir=cache_dir).tocsc()
        self.lr_needed = np.flatnonzero(np.diff(interp.indptr))  # LR cells (SFC) this shard uses
        self.interp = interp[:, self.lr_needed].tocsr()  # (b-a, n_needed)
        # {"orog": m, "lsm": fraction}, (b-a,) float64 each: this shard's static fields
        self.static_fields = static_forcings_from_store(static_store, hr_grid, static,
                                                        self.hr_cells)
        self._lr_time = {d: i for i, d in enumerate(lr.dates)}
        self._hr_time = {d: i for i, d in enumerate(hr.dates)}
        self.dates = report.dates
        self.skipped_dates = np.array([], dtype="datetime64[s]")
        self.normalisation: Normalisation | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, cfg: HpcdsConfig, hr_cells: tuple[int, int] | None = None,
                    require_complete: bool = True) -> "PairedDataset":
        d = cfg.data
        lr, hr = (open_store(getattr(d, key), f"data.{key}") for key in ("lr_store", "hr_store"))
        static_source = static_store(d, hr)
        if lr.frequency != hr.frequency:
            raise DataCheckError(f"LR frequency {lr.frequency} differs from HR frequency "
                                 f"{hr.frequency}: the stores must share a time step")
        for store, role in ((lr, "LR"), (hr, "HR")):
            check_variables(store, d.variables, role)
        report = match_dates(lr.dates, hr.dates, parse_frequency(hr.frequency),
                             lr.missing_dates, hr.missing_dates,
                             parse_date(d.start_date, "data.start_date"),
                             parse_date(d.end_date, "data.end_date"))
        if len(report.dates) == 0:
            raise DataCheckError(
                f"no common dates between {lr.path} and {hr.path} in the requested range: "
                "check data.start_date/end_date and the stores' dates")
        if require_complete and not report.complete:
            raise DataCheckError(f"{report.describe()}; fix the stores or restrict "
                                 "data.start_date/data.end_date")
        cache = cfg.grid.cache_dir  # large grids: built once, then memory-mapped
        ds = cls(lr, hr, static_source, lr_grid=cached_grid(cfg.grid.lr, cache),
                 hr_grid=cached_grid(cfg.grid.hr, cache), variables=d.variables, report=report,
                 nan_policy=d.nan_policy, hr_cells=hr_cells, cache_dir=cache, static=d.static,
                 log_transform=dict(d.log_transform))
        if d.nan_policy is NanPolicy.skip_date:
            ds.drop_dates(sorted({i for _, i in ds.nan_dates()}))
        return ds

    def nan_dates(self, progress=None) -> list[tuple[str, int]]:
        """(store role, date index) of every date whose cells hold a NaN. Only variables whose
        store statistics report NaNs are read (all of them if a store has no statistics)."""
        found = []
        for store, role, reader in ((self.lr, "LR", self.read_lr), (self.hr, "HR", self.read_hr)):
            flags = store.statistics.get("has_nans")
            if flags is not None and not np.asarray(flags)[
                    store.variable_index(self.variables)].any():
                continue
            for i in (progress(range(len(self))) if progress else range(len(self))):
                if np.isnan(reader(i, check_nans=False)).any():
                    found.append((role, i))
        return found

    def drop_dates(self, indices: list[int]) -> None:
        """Remove dates (e.g. those holding NaNs under data.nan_policy=skip_date)."""
        self.skipped_dates = self.dates[indices]
        self.dates = np.delete(self.dates, indices)
        if len(self.dates) == 0:
            raise DataCheckError("every date holds NaNs under data.nan_policy=skip_date: "
                                 "fix the stores")

    # ---------------------------------------------------------------- raw access
    def __len__(self) -> int:
        return len(self.dates)

    def read_lr(self, i: int, lr_cells: np.ndarray | None = None,
                check_nans: bool = True) -> np.ndarray:
        """(n_var, n_cells) float32 LR values of date i on `lr_cells` (LR SFC indices;
        default: the cells this shard's interpolation touches)."""
        t = self._lr_time[self.dates[i]]
        cells = self._lr_index[self.lr_needed if lr_cells is None else lr_cells]
        values = self.lr.read(t, self.variables, cells=cells)[0, :, 0]
        return self._checked(values, "LR", i) if check_nans else values

    def read_hr(self, i: int, check_nans: bool = True) -> np.ndarray:
        """(n_var, b-a) float32: this shard's HR cells."""
        t = self._hr_time[self.dates[i]]
        start, stop = self.hr_cells
        cells = slice(start, stop) if self.hr.cell_order == "sfc" else self._hr_index
        values = self.hr.read(t, self.variables, cells=cells)[0, :, 0]
        return self._checked(values, "HR", i) if check_nans else values

    def interpolate(self, lr_values: np.ndarray) -> np.ndarray:
        """(n_var, n_needed) → (n_var, b-a), float64 accumulation."""
        return np.asarray(self.interp @ lr_values.astype(np.float64).T).T

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(interp(x_LR), residual f(x_HR) − f(interp(x_LR))), each (n_var, b-a) float64."""
        cond, hr = self.interpolate(self.read_lr(i)), self.read_hr(i)
        if self.log_offset.any():
            when = f"date {iso(self.dates[i])}"
            check_domain(hr, self.log_offset, self.variables, f"the HR store, {when}")
            check_domain(cond, self.log_offset, self.variables, f"the interpolated LR, {when}")
        return cond, (transformed(hr, self.log_offset) - transformed(cond, self.log_offset))

    def residual(self, i: int) -> np.ndarray:
        """(n_var, b-a) float64: f(x_HR) − f(interp(x_LR)) (x_HR − interp(x_LR) untransformed)."""
        return self.pair(i)[1]

    def _checked(self, values: np.ndarray, role: str, i: int) -> np.ndarray:
        return require_finite(values, self.variables, f"the {role} store",
                              f"date {iso(self.dates[i])}",
                              "fix the store or set data.nan_policy=skip_date")

    # ---------------------------------------------------------------- statistics
    def residual_statistics(self, progress=None) -> RunningStats:
        """Shard-local float64 statistics of the residual over all dates (area-weighted)."""
        stats = RunningStats(self.variables)
        weights = self.hr_grid.area_weights[self.hr_cells[0]:self.hr_cells[1]]
        for i in (progress(range(len(self))) if progress else range(len(self))):
            stats.update(self.residual(i), variable_axis=0, weights=weights)
        return stats

    def set_normalisation(self, residual: RunningStats) -> Normalisation:
        lr_stats = self.lr.statistics
        idx = self.lr.variable_index(self.variables)
        self.normalisation = Normalisation(
            variables=tuple(self.variables),
            input_mean=np.asarray(lr_stats["mean"], np.float64)[idx],
            input_std=np.maximum(np.asarray(lr_stats["stdev"], np.float64)[idx], 1e-12),
            residual_mean=residual.mean, residual_std=np.maximum(residual.stdev, 1e-12),
            log_offset=self.log_offset.copy())
        return self.normalisation

    def save_statistics(self, path: str | os.PathLike) -> Path:
        """The normalisation as JSON beside the data, written atomically."""
        if self.normalisation is None:
            raise StoreError("no statistics to save: call set_normalisation first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {**self.normalisation.to_dict(), "lr_store": str(self.lr.path),
                   "hr_store": str(self.hr.path), "dates": [iso(self.dates[0]),
                                                            iso(self.dates[-1])],
                   "n_dates": len(self.dates)}
        atomic_write_text(path, json.dumps(payload, indent=2))
        return path

    # ---------------------------------------------------------------- samples
    def __getitem__(self, i: int) -> dict:
        if self.normalisation is None:
            raise StoreError("dataset statistics not set: run `hpcds data stats` or call "
                             "set_normalisation(residual_statistics())")
        cond, target = self.normalisation.apply(*self.pair(i))
        return {
            "date": self.dates[i],
            "cond": cond.astype(np.float32),
            "target": target.astype(np.float32),
            "forcings": forcing_fields(self.hr_grid, self.static_fields, self.dates[i],
                                       cells=self.hr_cells)[1],
        }
