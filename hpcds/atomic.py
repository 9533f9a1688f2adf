"""Atomic publication of files and directories.

Everything hpcds writes (stores, statistics, checkpoints, reports) is built under a temporary
sibling name and renamed into place only when complete, so a crash or an exception never leaves
a half-written output where a reader (or a rerun's "is it done?" check) would take it for a
finished one. A sibling, not a system temp directory, because ``rename`` is only atomic within
one filesystem.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

from hpcds.errors import StoreError


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh name beside `path`: ``<path>.<tag>-<pid>-<random>``.

    The pid tells which process left it behind if that process died; the random part keeps two
    threads (or two ranks on a shared filesystem with the same pid) apart.
    """
    path = Path(path)
    return path.with_name(f"{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def exists_error(path: str | os.PathLike) -> StoreError:
    """The one error for refusing to replace an existing output."""
    return StoreError(f"{path} exists; pass --overwrite (or overwrite=True) to replace it")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary sibling of `path` for writing; on a clean exit it is flushed, synced
    and renamed over `path`, on an exception removed. A reader sees either the old file or the
    complete new one, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data does
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file or a directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def publish_dir(tmp: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool) -> None:
    """Rename the complete directory `tmp` to `path`.

    With ``overwrite`` an existing `path` is renamed aside first, the new one renamed in, and
    only then the old one deleted; if the second rename fails the old one is put back. Without
    it an existing `path` is an error and `tmp` is left for the caller to clean up.

    Directories cannot be swapped with one atomic ``rename`` (it refuses a non-empty target),
    so there is a moment where `path` is absent; it never holds a partial store.
    """
    tmp, path = Path(tmp), Path(path)
    if not (path.exists() or path.is_symlink()):
        # os.rename onto an *empty* directory would succeed on POSIX; the check above is what
        # keeps us from silently merging into one. A racing writer can still slip in between.
        os.rename(tmp, path)
        return
    if not overwrite:
        raise exists_error(path)
    aside = temp_sibling(path, tag="old")
    os.rename(path, aside)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(aside, path)
        raise
    remove_path(aside)
