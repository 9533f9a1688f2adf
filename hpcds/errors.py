"""User-facing errors.

A ``UserError`` is bad input (a config key, a store, a grid): the CLI prints its one-line
message and exits with status 2, without a traceback. Anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """Bad input. The message is one line naming the problem and the fix."""


class ConfigError(UserError):
    """Unknown config key, wrong type, or value out of range."""


class GridError(UserError):
    """Unknown or malformed grid specification, or grids that do not fit together."""


class StoreError(UserError):
    """Missing or malformed store (zarr), or one that does not match what is asked of it."""


class DataCheckError(UserError):
    """LR/HR/forcings stores that do not describe the same atmospheric state."""


class CheckpointError(UserError):
    """Missing, truncated or corrupt checkpoint, or one that does not fit the configured model."""


class OutputError(UserError):
    """A write the machine refused: no space left, a read-only file system, no permission."""
