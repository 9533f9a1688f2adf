"""Areas on the sphere: named regions and "N/W/S/E" boxes.

An `Area` is a latitude band crossed with a longitude interval. Longitudes are kept as given
(west may be negative); a box whose west edge is east of its east edge ("60/350/30/20") wraps
through 0°E and is stored with ``east = east + 360`` so that ``west <= east`` always holds and
``east - west`` is the box's width in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcds.errors import GridError

# (north, west, south, east) in degrees
NAMED_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "alps": (49.0, 4.0, 43.0, 17.0),
    "himalaya": (37.0, 72.0, 25.0, 98.0),
}

_EPS_DEG = 1e-9  # slack for edges that should contain a point exactly on them


@dataclass(frozen=True)
class Area:
    """A box north/west/south/east in degrees, ``south <= north``, ``west <= east <= west+360``.

    ``full_circle`` is true when the box spans every longitude (then ``east == west + 360``).
    """

    north: float
    west: float
    south: float
    east: float

    @property
    def width(self) -> float:
        return self.east - self.west

    @property
    def full_circle(self) -> bool:
        return self.width >= 360.0 - _EPS_DEG

    def widened(self, margin_deg: float) -> "Area":
        """The box grown by `margin_deg` on every side (latitudes clipped to the poles,
        longitudes capped at the full circle)."""
        if margin_deg < 0:
            raise GridError(f"margin_deg={margin_deg} is negative; use a margin >= 0")
        north = min(90.0, self.north + margin_deg)
        south = max(-90.0, self.south - margin_deg)
        west, east = self.west - margin_deg, self.east + margin_deg
        if east - west >= 360.0:
            east = west + 360.0
        return Area(north, west, south, east)

    def contains(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(n,) bool: which points (degrees, any longitude convention) lie in the box, edges
        included."""
        lat = np.asarray(lat_deg, dtype=np.float64)
        lon = np.asarray(lon_deg, dtype=np.float64)
        in_lat = (lat <= self.north + _EPS_DEG) & (lat >= self.south - _EPS_DEG)
        if self.full_circle:
            return in_lat
        # distance east of the west edge in [-eps, 360 - eps): a point on the west edge that
        # rounding puts a hair west of it still counts as inside
        east_of_west = (lon - self.west + _EPS_DEG) % 360.0 - _EPS_DEG
        return in_lat & (east_of_west <= self.width + _EPS_DEG)

    def spec(self) -> str:
        """The canonical "N/W/S/E" string of this box."""
        east = self.east if self.east <= 360.0 else self.east - 360.0
        return "/".join(f"{v:g}" for v in (self.north, self.west, self.south, east))


def _area_from_numbers(north: float, west: float, south: float, east: float,
                       text: str) -> Area:
    for name, value in (("north", north), ("south", south)):
        if not -90.0 <= value <= 90.0:
            raise GridError(f"area {text!r}: {name} latitude {value:g} is outside [-90, 90]")
    if south > north:
        raise GridError(f"area {text!r}: south {south:g} is north of north {north:g}; "
                        "write the area as N/W/S/E")
    for name, value in (("west", west), ("east", east)):
        if not -360.0 <= value <= 360.0:
            raise GridError(f"area {text!r}: {name} longitude {value:g} is outside "
                            "[-360, 360]")
    if east < west:  # the box crosses the longitude where the numbers wrap, e.g. 350 → 20
        east += 360.0
    if east - west > 360.0 + _EPS_DEG:
        raise GridError(f"area {text!r} is wider than 360 degrees of longitude; "
                        "use 'global' or a narrower W/E")
    return Area(float(north), float(west), float(south), float(east))


def parse_area(area: str, margin_deg: float = 0.0) -> Area | None:
    """The box of `area` grown by `margin_deg`, or None for "global".

    area: "global", a named region (see `NAMED_REGIONS`, case-insensitive) or "N/W/S/E" in
    degrees (W > E means the box crosses the 0/360 seam, e.g. "60/350/30/20").
    """
    text = str(area).strip()
    key = text.lower()
    if key == "global":
        return None
    if key in NAMED_REGIONS:
        box = _area_from_numbers(*NAMED_REGIONS[key], text)
    else:
        parts = text.split("/")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 4 or not all(np.isfinite(numbers)):
            names = ", ".join(sorted(NAMED_REGIONS))
            raise GridError(f"unknown area {text!r}; use 'global', a named region ({names}) "
                            "or N/W/S/E in degrees, e.g. 49/4/43/17")
        box = _area_from_numbers(*numbers, text)
    return box.widened(margin_deg) if margin_deg else box
