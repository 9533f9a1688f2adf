"""Rotated-pole limited-area grids (CF ``rotated_latitude_longitude``, e.g. EURO-CORDEX).

The grid is regular in rotated coordinates (rlat, rlon) whose north pole sits at the
geographic point (grid_north_pole_latitude, grid_north_pole_longitude), with
north_pole_grid_longitude = 0: the rotated origin (0, 0) is then at geographic latitude
90 - pole_lat on the meridian pole_lon + 180 (EUR-11: pole 39.25°N, 162°W → origin 50.75°N,
18°E). The area is given in rotated coordinates; its N and W edges are the first row and
column (the CORDEX convention: domains are defined by their corner cells and counts, not by a
global lattice), rows step south to S and columns east to E, both inclusive.
Native order: rows north to south (decreasing rlat), each west to east; field_shape
(nlat, nlon).
"""

from __future__ import annotations

import numpy as np

from hpcds.errors import GridError
from hpcds.grids.geometry import lonlat_to_xyz, xyz_to_lonlat
from hpcds.grids.regions import Area
from hpcds.grids.regular import band_weights, full_circle_columns, rectangular_cells

_TOL_STEPS = 1e-4  # as in regular.py: float32 corners must not lose a row


def rotation_matrix(pole_lat: float, pole_lon: float) -> np.ndarray:
    """(3, 3) float64 R with xyz_geographic = R @ xyz_rotated.

    R = Rz(pole_lon + 180°) · Ry(-(90° - pole_lat)): the tilt takes the rotated north pole to
    latitude pole_lat on the 180° meridian (and the rotated origin to 0°E), the spin about z
    puts both on their geographic meridians.
    """
    tilt = np.deg2rad(90.0 - pole_lat)
    spin = np.deg2rad(pole_lon + 180.0)
    c, s = np.cos(tilt), np.sin(tilt)
    ry = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])  # Ry(-tilt)
    c, s = np.cos(spin), np.sin(spin)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry


def rotated_to_geographic(rlat: np.ndarray, rlon: np.ndarray, pole_lat: float,
                          pole_lon: float) -> tuple[np.ndarray, np.ndarray]:
    """Geographic (lat, lon in [0, 360)) degrees of rotated coordinates (any shape)."""
    xyz = lonlat_to_xyz(rlat, rlon) @ rotation_matrix(pole_lat, pole_lon).T
    return xyz_to_lonlat(xyz)


def geographic_to_rotated(lat: np.ndarray, lon: np.ndarray, pole_lat: float,
                          pole_lon: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotated (rlat, rlon in (-180, 180]) degrees of geographic coordinates (any shape)."""
    xyz = lonlat_to_xyz(lat, lon) @ rotation_matrix(pole_lat, pole_lon)  # R⁻¹ = Rᵀ
    rlat, rlon = xyz_to_lonlat(xyz)
    return rlat, np.where(rlon > 180.0, rlon - 360.0, rlon)


def check_pole(rotated_pole) -> tuple[float, float]:
    """(pole_lat, pole_lon) floats from a config's [lat, lon]."""
    try:
        pole_lat, pole_lon = (float(v) for v in rotated_pole)
    except (TypeError, ValueError):
        raise GridError(f"rotated_pole={rotated_pole!r}: give [latitude, longitude] of the "
                        "rotated north pole in degrees, e.g. [39.25, -162.0]") from None
    if not -90.0 <= pole_lat <= 90.0:
        raise GridError(f"rotated_pole latitude {pole_lat:g} is outside [-90, 90]")
    return pole_lat, pole_lon


def rotated_axes(dlat: float, dlon: float, area: Area) -> tuple[np.ndarray, np.ndarray]:
    """Rotated row latitudes (nlat,) from N southwards and column longitudes (nlon,) from W
    eastwards, degrees."""
    nlat = int(np.floor((area.north - area.south) / dlat + _TOL_STEPS)) + 1
    if area.full_circle:
        nlon = full_circle_columns(dlon, f"rotated grid {dlat:g}/{dlon:g}")
    else:
        nlon = int(np.floor(area.width / dlon + _TOL_STEPS)) + 1
    return area.north - dlat * np.arange(nlat), area.west + dlon * np.arange(nlon)


def rotated_coordinates(dlat: float, dlon: float, area: Area, pole_lat: float,
                        pole_lon: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Native-order cells: geographic lat (n,), lon (n,) in [0, 360), area weights (n,)
    summing to 1, and field_shape (nlat, nlon).

    The weights are the cells' solid angles in rotated coordinates (a rotation preserves
    area), i.e. the rotated cos-latitude band areas.
    """
    rlats, rlons = rotated_axes(dlat, dlon, area)
    rlat, rlon, w = rectangular_cells(rlats, rlons, band_weights(rlats, dlat))
    lat, lon = rotated_to_geographic(rlat, rlon, pole_lat, pole_lon)
    return lat, lon, w, (rlats.size, rlons.size)
