"""From a `GridConfig` to a `Grid` in SFC order (and cheap facts about it without building it).

Accepted grids:
  "O<N>"            octahedral reduced Gaussian; with an area, the cells of the global O<N>
                    that lie inside it (e.g. an O1280 HR grid over the Alps)
  "<dlat>/<dlon>"   regular lat-lon in degrees, global or on an area (a sub-lattice of the
                    global grid); with `rotated_pole`, a rotated limited-area grid whose
                    area is in rotated coordinates

A new kind of grid is one entry of `KINDS` (its coordinates, point count and description)
plus the branch of `parse_grid_config` that recognises its name; every built `Grid` carries
its parsed `GridSpec` (`Grid.spec`, `Grid.kind`), so nothing downstream re-parses names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpcds.config.schema import GridConfig
from hpcds.errors import GridError
from hpcds.grids.geometry import EARTH_RADIUS_M, Grid
from hpcds.grids.octahedral import (octahedral_coordinates, octahedral_pl,
                                    octahedral_ring_layout, octahedral_size)
from hpcds.grids.regions import NAMED_REGIONS, Area, parse_area
from hpcds.grids.regular import parse_regular_name, regular_axes, regular_coordinates
from hpcds.grids.rotated import check_pole, rotated_axes, rotated_coordinates
from hpcds.grids.sfc import sfc_order

_OCTAHEDRAL = re.compile(r"^[oO](\d+)$")
_ACCEPTED = ("use O<N> (octahedral reduced Gaussian, e.g. O320) or <dlat>/<dlon> "
             "(regular lat-lon in degrees, e.g. 0.25/0.25)")


@dataclass(frozen=True)
class GridSpec:
    """A parsed, validated `GridConfig`.

    kind: a key of `KINDS`, "octahedral" | "regular" | "rotated";
    label: the `Grid.name` it builds, "<grid>" for global grids and "<area>@<grid>" otherwise
    ("alps@0.25/0.25", "alps+2@1.0/1.0",
    "pole(39.25,-162):23.265/-29.805/-24.805/19.585@0.11/0.11");
    N: octahedral N;  steps: (dlat, dlon) degrees;  area: None for global;
    pole: (lat, lon) of the rotated north pole.
    """

    kind: str
    label: str
    area: Area | None
    N: int | None = None
    steps: tuple[float, float] | None = None
    pole: tuple[float, float] | None = None


def parse_grid_config(cfg: GridConfig) -> GridSpec:
    """Validate `cfg` into a `GridSpec`; GridError naming the problem otherwise."""
    name = str(cfg.name).strip()
    area = parse_area(cfg.area, cfg.margin_deg)
    where = _area_label(cfg) if area is not None else ""
    match = _OCTAHEDRAL.match(name)
    steps = None if match else parse_regular_name(name)
    if match is None and steps is None:
        raise GridError(f"unknown grid name {name!r}; {_ACCEPTED}")
    if cfg.rotated_pole is not None:
        if steps is None:
            raise GridError(f"grid {name!r} with rotated_pole: rotated grids must be regular "
                            "in rotated coordinates; use <dlat>/<dlon>, e.g. 0.11/0.11")
        if area is None:
            raise GridError("rotated_pole needs a limited area: set area to N/W/S/E in rotated "
                            "coordinates, e.g. 23.265/-29.805/-24.805/19.585 (EUR-11)")
        pole = check_pole(cfg.rotated_pole)
        label = f"pole({pole[0]:g},{pole[1]:g}):{where}@{name}"
        return GridSpec("rotated", label, area, steps=steps, pole=pole)
    label = f"{where}@{name}" if where else name
    if match is not None:
        N = int(match.group(1))
        if N < 1:
            raise GridError(f"grid {name!r}: N must be a positive integer, e.g. O320")
        return GridSpec("octahedral", label, area, N=N)
    return GridSpec("regular", label, area, steps=steps)


def _area_label(cfg: GridConfig) -> str:
    """"alps", "alps+2" (with a margin), or the canonical "N/W/S/E" of an explicit box."""
    text = str(cfg.area).strip().lower()
    where = text if text in NAMED_REGIONS else parse_area(text).spec()
    return f"{where}+{cfg.margin_deg:g}" if cfg.margin_deg else where


def native_coordinates(spec: GridSpec
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Native-order lat (n,), lon (n,) in [0, 360), area weights (n,), field_shape."""
    lat, lon, w, shape = KINDS[spec.kind].coordinates(spec)
    # x % 360 of a value a rounding step below 0 is 360.0: keep [0, 360)
    lon = np.where(lon >= 360.0, lon - 360.0, lon)
    return lat, lon, w, shape


def make_grid(cfg: GridConfig) -> Grid:
    """Build the grid of `cfg` in SFC order (`native_index` maps back to the native order)."""
    spec = parse_grid_config(cfg)
    lat, lon, w, shape = native_coordinates(spec)
    perm = sfc_order(lat, lon)
    for array in (lat, lon, w, perm):
        array.setflags(write=False)
    return Grid(name=spec.label, latitudes=lat[perm], longitudes=lon[perm],
                area_weights=w[perm], native_index=perm, field_shape=tuple(shape),
                is_global=spec.area is None, spec=spec)


def grid_from_name(name: str, area: str = "global") -> Grid:
    """`make_grid` of a grid name and area, e.g. grid_from_name("O96") or ("1.0/1.0", "alps")."""
    return make_grid(GridConfig(name=name, area=area))


def grid_point_count(cfg: GridConfig) -> int:
    """Number of cells of the grid of `cfg`, without building its coordinates."""
    spec = parse_grid_config(cfg)
    return KINDS[spec.kind].point_count(spec)


def _lon_interval(lon: np.ndarray) -> tuple[float, float]:
    """Smallest (west, east) longitude interval holding every point, east - west < 360,
    west in [-180, 360): the complement of the widest gap between sorted longitudes."""
    lon = np.unique(np.asarray(lon) % 360.0)
    gaps = np.diff(np.concatenate([lon, [lon[0] + 360.0]]))
    k = int(np.argmax(gaps))
    west, east = lon[(k + 1) % lon.size], lon[k]
    if east < west:
        west -= 360.0
    return float(west), float(east)


# ------------------------------------------------------------------------ the kinds of grid
def _octahedral_coordinates(spec: GridSpec):
    lat, lon, w = octahedral_coordinates(spec.N, spec.area)
    return lat, lon, w, (lat.size,)


def _octahedral_count(spec: GridSpec) -> int:
    if spec.area is None:
        return octahedral_size(spec.N)
    return int(octahedral_ring_layout(spec.N, spec.area)[3].sum())


def _describe_octahedral(spec: GridSpec, points: int) -> dict:
    lat, _, j0, count = octahedral_ring_layout(spec.N, spec.area)
    pl = octahedral_pl(spec.N)
    used = count > 0
    if spec.area is None or spec.area.full_circle:
        lon_range = (0.0, float(360.0 - 360.0 / pl.max()))
    else:
        lon_range = (float((360.0 * j0 / pl)[used].min()),
                     float((360.0 * (j0 + count - 1) / pl)[used].max()))
    return {
        "field_shape": (points,),
        "rings": int(used.sum()),
        # the usual figure for reduced grids: √(mean cell area) (O2560 ≈ 4.4 km)
        "spacing_km": float(np.sqrt(4 * np.pi / octahedral_size(spec.N))
                            * EARTH_RADIUS_M / 1e3),
        "spacing_basis": "sqrt of the mean cell area",
        "lat_range": (float(lat[used].min()), float(lat[used].max())),
        "lon_range": lon_range,
    }


def _rectangular_count(axes):
    def count(spec: GridSpec) -> int:
        rows, cols = axes(*spec.steps, spec.area)
        return int(rows.size * cols.size)
    return count


def _latitude_step(spec: GridSpec) -> dict:
    return {"spacing_km": float(np.deg2rad(spec.steps[0]) * EARTH_RADIUS_M / 1e3),
            "spacing_basis": "latitude step"}


def _describe_regular(spec: GridSpec, points: int) -> dict:
    rows, cols = regular_axes(*spec.steps, spec.area)
    return {"field_shape": (rows.size, cols.size), **_latitude_step(spec),
            "lat_range": (float(rows.min()), float(rows.max())),
            "lon_range": (float(cols.min()), float(cols.max()))}


def _describe_rotated(spec: GridSpec, points: int) -> dict:
    # the geographic extent of a rotated grid needs its coordinates (small grids)
    rows, cols = rotated_axes(*spec.steps, spec.area)
    lat, lon, _, _ = native_coordinates(spec)
    return {"field_shape": (rows.size, cols.size), **_latitude_step(spec),
            "lat_range": (float(lat.min()), float(lat.max())), "lon_range": _lon_interval(lon),
            "rotated_pole": spec.pole}


@dataclass(frozen=True)
class GridKind:
    """What `make_grid`, `grid_point_count` and `describe_grid` need of one kind of grid.

    module:       the hpcds.grids module that computes its coordinates (its source is part
                  of the disk cache's key, `grid_cache.py`)
    coordinates:  spec → native-order lat, lon, area weights, field_shape
    point_count:  spec → number of cells, without building the coordinates
    describe:     (spec, points) → field_shape, spacing_km, spacing_basis, lat_range,
                  lon_range and kind-specific facts, for `describe_grid`
    """

    module: str
    coordinates: Callable[[GridSpec], tuple]
    point_count: Callable[[GridSpec], int]
    describe: Callable[[GridSpec, int], dict]


KINDS = {
    "octahedral": GridKind("octahedral", _octahedral_coordinates, _octahedral_count,
                           _describe_octahedral),
    "regular": GridKind("regular", lambda s: regular_coordinates(*s.steps, s.area),
                        _rectangular_count(regular_axes), _describe_regular),
    "rotated": GridKind("rotated", lambda s: rotated_coordinates(*s.steps, s.area, *s.pole),
                        _rectangular_count(rotated_axes), _describe_rotated),
}


def describe_grid(cfg: GridConfig) -> dict:
    """Facts for `hpcds grid info`: name, kind, points, field_shape, rings (octahedral),
    spacing_km (and spacing_basis: how it is measured), lat_range and lon_range of the cell
    centres in degrees, rotated_pole (rotated), is_global, area. Cheap for O2560: no
    coordinates are built except for rotated grids."""
    spec = parse_grid_config(cfg)
    points = grid_point_count(cfg)
    info: dict = {"name": spec.label, "kind": spec.kind, "points": points}
    info.update(KINDS[spec.kind].describe(spec, points))
    west, east = info["lon_range"]
    if east > 360.0:  # a box across 0°E, e.g. 350..380: show it as -10..20
        info["lon_range"] = (west - 360.0, east - 360.0)
    info["is_global"] = spec.area is None
    info["area"] = "global" if spec.area is None else spec.area.spec()
    return info
