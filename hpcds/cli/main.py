"""`hpcds` command line: subcommands per component, one module each.

    hpcds data benchmark [CONFIG] [key=value ...] [--overwrite]
    hpcds data forcings  [CONFIG] [key=value ...] [--overwrite]
    hpcds data check     [CONFIG] [key=value ...]
    hpcds data stats     [CONFIG] [key=value ...]
    hpcds demo           [CONFIG=demo] [key=value ...] [--out DIR] [--quick]
    hpcds evaluate       [CONFIG] [key=value ...] --forecast [LABEL=]STORE [--forecast ...]
                         [--truth STORE] [--out DIR] [--deterministic CKPT]
    hpcds grid info      GRID [--area AREA] [--shards P]
    hpcds plan           CONFIG --gpus N [--gpu-memory 80GB] [--data-parallel D] [--json]
    hpcds sample         [CONFIG] [key=value ...] [--checkpoint PATH] [--members M] [--overwrite]
    hpcds train          [CONFIG] [key=value ...]

CONFIG is a YAML path or a preset name from configs/ (default: tiny). Bad input (a config
key, a store, a grid, a full disk or a read-only output directory) prints one line
`hpcds: error: …` and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from hpcds import __version__
from hpcds.atomic import output_error
from hpcds.cpu_malloc import keep_freed_memory
from hpcds.cli import (
    data_cmds,
    demo_cmds,
    evaluate_cmds,
    grid_cmds,
    plan_cmds,
    sample_cmds,
    train_cmds,
)
from hpcds.errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcds",
        description="Distributed diffusion downscaling: LR atmospheric states in, ensembles "
                    "of plausible HR states out.",
        epilog="Run `hpcds COMMAND --help` for each command. Configs: a YAML path or a preset "
               "name from configs/ (tiny, ...), then key=value overrides.")
    parser.add_argument("--version", action="version", version=f"hpcds {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cmds.register(commands)
    demo_cmds.register(commands)
    evaluate_cmds.register(commands)
    grid_cmds.register(commands)
    plan_cmds.register(commands)
    sample_cmds.register(commands)
    train_cmds.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may follow options too (`check tiny --quiet data.x=1`): argparse leaves
    # positionals after an option unparsed, so collect the key=value ones here
    args, rest = parser.parse_known_args(argv)
    stray = [a for a in rest if "=" not in a or a.startswith("-")]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    keep_freed_memory()  # CPU steps reuse their freed activations (hpcds/cpu_malloc.py)
    try:
        return int(args.func(args) or 0)
    except (UserError, OSError) as exc:
        # a full disk or a refused write that no writer reported with its output (those
        # raise OutputError themselves); any other OSError is a bug and keeps its traceback
        error = exc if isinstance(exc, UserError) else output_error(exc)
        if error is None:
            raise
        print(f"hpcds: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("hpcds: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
