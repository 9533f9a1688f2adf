"""Grids, space-filling-curve order, partitions, graphs and interpolation on the sphere.

Every node set is a `Grid` in SFC order (`make_grid`); a model-parallel shard is a
contiguous range of it (`shard_ranges`).
"""

from hpcds.grids.coarsen import coarsening_matrix
from hpcds.grids.geometry import EARTH_RADIUS_M, Grid, lonlat_to_xyz, xyz_to_lonlat
from hpcds.grids.graph import Graph, cached_graph, knn_graph, radius_graph
from hpcds.grids.interp import cached_interpolation_matrix, interpolation_matrix
from hpcds.grids.octahedral import gaussian_latitudes, octahedral_pl, octahedral_size
from hpcds.grids.partition import shard_of, shard_ranges
from hpcds.grids.regions import NAMED_REGIONS, Area, parse_area
from hpcds.grids.rotated import geographic_to_rotated, rotated_to_geographic
from hpcds.grids.sfc import sfc_keys, sfc_order
from hpcds.grids.spec import describe_grid, grid_from_name, grid_point_count, make_grid

__all__ = [
    "EARTH_RADIUS_M", "NAMED_REGIONS", "Area", "Graph", "Grid", "cached_graph",
    "cached_interpolation_matrix",
    "coarsening_matrix", "describe_grid", "gaussian_latitudes", "geographic_to_rotated",
    "grid_from_name", "grid_point_count", "interpolation_matrix", "knn_graph",
    "lonlat_to_xyz", "make_grid", "octahedral_pl", "octahedral_size", "parse_area",
    "radius_graph", "rotated_to_geographic", "sfc_keys", "sfc_order", "shard_of",
    "shard_ranges", "xyz_to_lonlat",
]
