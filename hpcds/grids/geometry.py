"""The `Grid`: one node set on the sphere, stored in space-filling-curve (SFC) order.

Every grid hpcds builds (regular lat-lon, rotated-pole limited area, octahedral reduced
Gaussian) is held in SFC order, so that a model-parallel shard is a contiguous range of cells.
``native_index`` maps back to the grid's conventional order (ring by ring from the north,
west to east), which is the order of GRIB files and of anemoi stores written by other tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # spec.py builds Grids: importing it here at run time would be circular
    from hpcds.grids.spec import GridSpec

EARTH_RADIUS_M = 6_371_229.0  # the IFS sphere


def lonlat_to_xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) float64 for latitudes/longitudes in degrees."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_lonlat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) in degrees, lon in [0, 360), of vectors (n, 3) (need not be unit length)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    r = np.linalg.norm(xyz, axis=-1)
    lat = np.rad2deg(np.arcsin(np.clip(xyz[..., 2] / r, -1.0, 1.0)))
    lon = np.rad2deg(np.arctan2(xyz[..., 1], xyz[..., 0])) % 360.0
    return lat, lon


@dataclass(frozen=True, eq=False)
class Grid:
    """A set of cells on the sphere in SFC order.

    name:         the spec it was built from, e.g. "O320", "0.25/0.25", "alps@0.125"
    latitudes:    (n,) float64, degrees north
    longitudes:   (n,) float64, degrees east in [0, 360)
    area_weights: (n,) float64, each cell's share of the grid's area; sums to 1
    native_index: (n,) int64, position of each cell in the native (ring/row-major) order
    field_shape:  native shape: (nlat, nlon) for rectangular grids, (n,) for reduced grids
    is_global:    whether the grid covers the whole sphere
    spec:         the parsed `GridSpec` it was built from (kind, octahedral N, steps, area,
                  pole); None for a point set made by hand, e.g. in a test
    """

    name: str
    latitudes: np.ndarray
    longitudes: np.ndarray
    area_weights: np.ndarray
    native_index: np.ndarray
    field_shape: tuple[int, ...]
    is_global: bool
    spec: GridSpec | None = None

    @property
    def kind(self) -> str | None:
        """"octahedral" | "regular" | "rotated" (`hpcds.grids.spec.KINDS`); None without a
        spec. Read this, not the name: names are labels, not a format to parse."""
        return None if self.spec is None else self.spec.kind

    @property
    def size(self) -> int:
        return int(self.latitudes.shape[0])

    def unit_vectors(self) -> np.ndarray:
        """(n, 3) float64 unit vectors of the cell centres."""
        return lonlat_to_xyz(self.latitudes, self.longitudes)

    def to_native(self, values: np.ndarray, axis: int = -1) -> np.ndarray:
        """Reorder `values` (SFC order along `axis`) into the grid's native order."""
        out = np.empty_like(values)
        idx = [slice(None)] * values.ndim
        idx[axis] = self.native_index
        out[tuple(idx)] = values
        return out

    def from_native(self, values: np.ndarray, axis: int = -1) -> np.ndarray:
        """Reorder `values` in native order along `axis` into this grid's SFC order."""
        return np.take(values, self.native_index, axis=axis)
