"""The sources an evaluation scores: labelled forecast stores, then the baselines.

    paths = parse_forecast_specs(["before=runs/demo/ensemble.zarr", "after=runs/ft.zarr"])
    forecasts, dates = open_forecasts(paths, ds)   # checked against the truth and each other
    forecasts[0].members(ds.dates[dates[0]])       # (M, V, N) float64, one date at a time

A forecast is any ensemble store (`hpcds sample` output) under a label; a bare store is
labelled "forecast". The baselines (`hpcds.evaluate.baselines`) keep their fixed names, so a
label may not take one of them, nor "truth". Results list the sources in `ordered_sources`
order: the forecasts as given, then oracle, deterministic, interpolation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hpcds.data.cells import store_cells_for_grid
from hpcds.data.dates import iso
from hpcds.ensemble.output import EnsembleStore
from hpcds.errors import StoreError, UserError

DEFAULT_LABEL = "forecast"
BASELINES = ("oracle", "deterministic", "interpolation")  # in summary/legend order
ENSEMBLE_BASELINES = ("oracle",)  # baselines with spread (spread/skill, rank histograms)
RESERVED = (*BASELINES, "truth")
# a label is a JSON key, a legend entry and a word of the comma-separated summary lines
_LABEL = re.compile(r"[\w.+-]+")


def check_label(label: str) -> str:
    """`label` if it can name a forecast, else a UserError saying why."""
    if not label:
        raise UserError("a forecast label is empty: pass --forecast LABEL=STORE with a "
                        "non-empty LABEL, or a bare STORE")
    if label in RESERVED:
        raise UserError(f"forecast label {label!r} is taken by the "
                        f"{'truth' if label == 'truth' else 'baseline of that name'}: "
                        f"pick another (not one of {', '.join(RESERVED)})")
    if not _LABEL.fullmatch(label):
        raise UserError(f"forecast label {label!r} may only have letters, digits and _ . + -")
    return label


def parse_forecast_specs(specs: Sequence[str]) -> dict[str, str]:
    """label → store from `--forecast` values, each `LABEL=STORE` or a bare `STORE`
    (labelled "forecast"). Text before the first "=" is a label only when it has no path
    separator, so a bare `runs/lr=1e-4/ensemble.zarr` stays a store."""
    out: dict[str, str] = {}
    for spec in specs:
        label, sep, store = spec.partition("=")
        if not sep or "/" in label or os.sep in label:
            label, store = DEFAULT_LABEL, spec
        check_label(label)
        if not store:
            raise UserError(f"--forecast {spec}: no store after {label!r}=; pass LABEL=STORE")
        if label in out:
            raise UserError(f"forecast label {label!r} is given twice: label each store "
                            "once, e.g. --forecast before=STORE --forecast after=STORE")
        out[label] = store
    return out


def forecast_paths(forecasts) -> dict[str, Path]:
    """label → store path from evaluate()'s argument: one store path (labelled "forecast")
    or a mapping label → store path; checks the labels and that every store exists."""
    if isinstance(forecasts, (str, os.PathLike)):
        forecasts = {DEFAULT_LABEL: forecasts}
    if not isinstance(forecasts, Mapping) or not forecasts:
        raise UserError("give at least one forecast store (--forecast [LABEL=]STORE)")
    paths = {check_label(str(label)): Path(p) for label, p in forecasts.items()}
    for label, p in paths.items():
        if not p.exists():
            named = "" if label == DEFAULT_LABEL else f" ({label!r})"
            raise StoreError(f"no forecast store at {p}{named}: sample one with `hpcds sample`")
    return paths


def ordered_sources(forecast_labels, present) -> list[str]:
    """The sources in `present` in report order: the forecasts as given, then BASELINES."""
    return [s for s in (*forecast_labels, *BASELINES) if s in present]


def ensemble_sources(result: dict) -> list[str]:
    """The sources of `result` with spread: the forecasts and the oracle."""
    return [s for s in result["sources"]
            if s in result["forecasts"] or s in ENSEMBLE_BASELINES]


# what a store that is not an ensemble store is told (not `hpcds sample`'s overwrite hint)
FORECAST_FIX = "--forecast takes an ensemble store written by `hpcds sample` (sampling.output)"

class StoreSource:
    """An ensemble store read as a source: checked against the truth dataset `ds` (its
    variables and grid), read one date at a time in the dataset's variables and cell order.

    dates: {date → time index} of the dates whose members are all done."""

    def __init__(self, label: str, path, ds):
        self.label, self.path = label, Path(path)
        what = f"the {label!r} store"
        self.store = EnsembleStore.open(self.path, fix=FORECAST_FIX)
        missing = [v for v in ds.variables if v not in self.store.variables]
        if missing:
            raise StoreError(f"{what} {self.path} lacks variables {missing}: set "
                             f"data.variables to some of {self.store.variables}")
        self.var_index = [self.store.variables.index(v) for v in ds.variables]
        self.cells = store_cells_for_grid(self.store, ds.hr_grid, what,
                                          "evaluate with the config it was sampled with")
        done = self.store.done().all(axis=1)
        self.dates = {d: t for t, d in enumerate(self.store.dates) if done[t]}

    @property
    def n_members(self) -> int:
        return self.store.n_members

    def members(self, date) -> np.ndarray:
        """(M, V, N) float64: every member at `date`, the dataset's variables, the grid's
        cells in SFC order."""
        x = self.store.read(self.dates[date])[0][self.var_index][..., self.cells]  # (V, M, N)
        return np.moveaxis(x, 1, 0).astype(np.float64)


def open_forecasts(paths: Mapping[str, Path], ds) -> tuple[list[StoreSource], list[int]]:
    """Open every forecast store, check it against the truth dataset `ds` and against the
    first forecast (same complete dates in common with the truth, same member count), and
    return them with the indices into ds.dates of those dates."""
    sources = [StoreSource(label, p, ds) for label, p in paths.items()]
    first = sources[0]
    dates = [i for i, d in enumerate(ds.dates) if d in first.dates]
    if not dates:
        raise StoreError(f"the {first.label!r} store {first.path} has no complete date in "
                         f"common with the truth store {ds.hr.path}")
    truth_dates = set(ds.dates)
    for s in sources[1:]:
        if set(s.dates) & truth_dates != set(first.dates) & truth_dates:
            odd = sorted(set(s.dates).symmetric_difference(first.dates) & truth_dates)
            raise StoreError(f"the {s.label!r} store {s.path} has other complete dates than "
                             f"{first.label!r} (e.g. {iso(odd[0])}): sample both for the "
                             "same dates, or finish the sampling")
        if s.n_members != first.n_members:
            raise StoreError(f"the {s.label!r} store {s.path} has {s.n_members} members, "
                             f"{first.label!r} {first.n_members}: compare ensembles of one "
                             "size (the oracle and the fair CRPS are per size)")
    return sources, dates
