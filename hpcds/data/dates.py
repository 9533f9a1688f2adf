"""Date bookkeeping for paired stores: the common dates and what is missing where."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcds.errors import ConfigError, UserError


def parse_frequency(frequency: str) -> np.timedelta64:
    """"6h" / "1d" / "30m" → timedelta64[s]."""
    units = {"h": 3600, "d": 86400, "m": 60, "s": 1}
    text = str(frequency).strip().lower()
    if text[-1:] in units and text[:-1].isdigit():
        return np.timedelta64(int(text[:-1]) * units[text[-1]], "s")
    raise ConfigError(f"bad frequency {frequency!r}: expected e.g. '6h', '1d'")


def frequency_string(step: np.timedelta64) -> str:
    """numpy.timedelta64 → the shortest of "1d", "6h", "30m", "10s"."""
    seconds = int(step / np.timedelta64(1, "s"))
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def iso(date: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(date, "s"), unit="s"))


def as_dates(values, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype="datetime64[s]").reshape(-1)
    except (TypeError, ValueError) as e:
        raise UserError(f"{what} must be datetime64 values or ISO strings ({e})") from None


def list_dates(dates: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(iso(d) for d in dates[:limit])
    return shown + (f", … ({len(dates)} in all)" if len(dates) > limit else "")


def parse_date(text: str | None, key: str) -> np.datetime64 | None:
    if text is None:
        return None
    try:
        return np.datetime64(text, "s")
    except ValueError:
        raise ConfigError(f"bad value {text!r} for config key {key!r}: expected an ISO date "
                          "such as 2026-01-01T06:00") from None


@dataclass(frozen=True)
class DateReport:
    """dates: the usable common dates; missing_*: expected dates absent from each store
    (outside its declared `missing_dates` or inside them — both count as missing)."""

    dates: np.ndarray
    missing_in_lr: np.ndarray
    missing_in_hr: np.ndarray

    @property
    def complete(self) -> bool:
        return not (len(self.missing_in_lr) or len(self.missing_in_hr))

    def describe(self) -> str:
        parts = []
        for name, missing in (("LR", self.missing_in_lr), ("HR", self.missing_in_hr)):
            if len(missing):
                parts.append(f"{len(missing)} dates missing from the {name} store "
                             f"({list_dates(missing, limit=3)})")
        return "; ".join(parts) or "all dates present"


def match_dates(lr_dates: np.ndarray, hr_dates: np.ndarray, frequency: np.timedelta64,
                lr_declared_missing=(), hr_declared_missing=(),
                start: np.datetime64 | None = None, end: np.datetime64 | None = None) -> DateReport:
    """Expected dates run from the first to the last date of either store (clipped to
    [start, end]) at `frequency`; a date is usable when both stores hold it and neither
    declares it missing."""
    lr = np.asarray(lr_dates, dtype="datetime64[s]")
    hr = np.asarray(hr_dates, dtype="datetime64[s]")
    lo = min(lr.min(), hr.min()) if start is None else start
    hi = max(lr.max(), hr.max()) if end is None else end
    expected = np.arange(lo, hi + frequency, frequency).astype("datetime64[s]")
    expected = expected[expected <= hi]
    lr_ok = np.setdiff1d(lr, np.asarray(lr_declared_missing, dtype="datetime64[s]"))
    hr_ok = np.setdiff1d(hr, np.asarray(hr_declared_missing, dtype="datetime64[s]"))
    usable = np.intersect1d(np.intersect1d(expected, lr_ok), hr_ok)
    return DateReport(
        dates=usable,
        missing_in_lr=np.setdiff1d(expected, lr_ok),
        missing_in_hr=np.setdiff1d(expected, hr_ok),
    )
