"""`hpcds grid ...`: inspect grids without building a model."""

from __future__ import annotations

import argparse

from hpcds.config.schema import GridConfig
from hpcds.grids import describe_grid, grid_point_count, shard_ranges


def register(commands) -> None:
    grid = commands.add_parser("grid", help="inspect grids",
                               description="Inspect the grids hpcds supports.")
    sub = grid.add_subparsers(dest="grid_command", metavar="COMMAND", required=True)
    info = sub.add_parser(
        "info", help="points, spacing and extent of a grid",
        description="Print a grid's size, nominal spacing and extent. GRID: O<N> (octahedral "
                    "reduced Gaussian, e.g. O320, O2560) or <dlat>/<dlon> (regular lat-lon).")
    info.add_argument("grid", metavar="GRID", help="e.g. O2560, O320, 0.25/0.25")
    info.add_argument("--area", default="global",
                      help="global (default), a named region (alps, himalaya) or N/W/S/E")
    info.add_argument("--rotated-pole", type=float, nargs=2, metavar=("LAT", "LON"),
                      help="rotated north pole: GRID and --area are then in rotated coordinates")
    info.add_argument("--shards", type=int, default=0,
                      help="also show a split of the SFC order into this many shards")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    cfg = GridConfig(name=args.grid, area=args.area,
                     rotated_pole=list(args.rotated_pole) if args.rotated_pole else None)
    for key, value in describe_grid(cfg).items():
        print(f"{key:>18}: {_fmt(value)}")
    if args.shards:
        ranges = shard_ranges(grid_point_count(cfg), args.shards)
        sizes = sorted({b - a for a, b in ranges})
        print(f"{'shards':>18}: {len(ranges)} contiguous SFC ranges of "
              f"{' or '.join(f'{s:,}' for s in sizes)} points")
    return 0


def _fmt(value) -> str:
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)
