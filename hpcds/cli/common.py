"""Pieces every subcommand shares: the config arguments and progress bars."""

from __future__ import annotations

import argparse
import functools
import sys

from tqdm.auto import tqdm

from hpcds.config.load import load_config, preset_names, to_yaml
from hpcds.config.schema import HpcdsConfig


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default="tiny",
                        help=f"YAML path or preset ({', '.join(preset_names())}); default: tiny")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. benchmark.n_dates=8 data.variables=[2t,tp]")
    parser.add_argument("--quiet", action="store_true",
                        help="do not print the resolved config at start")


def is_first_rank() -> bool:
    """Rank 0 of a parallel launch (or a single process): the one that prints."""
    from hpcds.distributed import discover_env
    return discover_env().rank == 0


def config_from_args(args: argparse.Namespace) -> HpcdsConfig:
    """Loads the config; a bare `key=value` in the CONFIG position counts as an override."""
    config, overrides = args.config, list(args.overrides)
    if "=" in config:
        config, overrides = "tiny", [config, *overrides]
    cfg = load_config(config, overrides)
    if not args.quiet and is_first_rank():
        print(f"# resolved config ({config} {' '.join(overrides)})".rstrip(), file=sys.stderr)
        print(to_yaml(cfg), file=sys.stderr)
    return cfg


def progress(desc: str):
    """A tqdm factory for long loops: bars on a terminal, silent in logs."""
    return functools.partial(tqdm, desc=desc, leave=False, disable=None, file=sys.stderr)
