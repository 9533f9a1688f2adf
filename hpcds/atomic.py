"""Atomic publication of files and directories, and the errors of writing them.

Everything hpcds writes (stores, statistics, checkpoints, reports) is built under a temporary
sibling name and renamed into place only when complete, so a crash or an exception never leaves
a half-written output where a reader (or a rerun's "is it done?" check) would take it for a
finished one. A sibling, not a system temp directory, because ``rename`` is only atomic within
one filesystem.

Temporaries are named ``<output>.<tag>-<host>-<pid>-<random>`` (`temp_sibling`). A writer
killed outright (SIGKILL, a node failure) cannot remove its own; the next writer of the same
output does (`remove_stale_temps`), once the name says the writer is gone.

A write the machine refuses (a full disk, a read-only or forbidden directory) is bad input,
not a bug: `writing(path)` turns its OSError into a one-line `OutputError` naming the output
(`output_error`: the one place that maps errno values to messages; the CLI uses it too for
whatever escapes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from hpcds.errors import OutputError, StoreError

# a host name in the temporaries' names: a pid only identifies a process on its own host,
# and outputs often live on a filesystem that many nodes share
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "localhost"
_TEMP = re.compile(r"(?P<output>.+)\.(?P<tag>tmp|old)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)"
                   r"-[0-9a-f]{8}")
# a temporary of another host is left alone unless it is this old: its writer cannot be asked
# from here, and a store's top-level mtime does not move while chunks are written below it
FOREIGN_STALE_AFTER_S = 7 * 24 * 3600


@dataclass(frozen=True)
class TempName:
    """What a temporary's name says: the output it is for, its tag, the writer's host and pid."""

    output: str
    tag: str
    host: str
    pid: int


def parse_temp(name: str) -> TempName | None:
    """The parts of a name made by `temp_sibling`; None for any other name."""
    m = _TEMP.fullmatch(name)
    return None if m is None else TempName(m["output"], m["tag"], m["host"], int(m["pid"]))


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh name beside `path`: ``<path>.<tag>-<host>-<pid>-<random>``, after removing the
    temporaries that dead writers of `path` left there (`remove_stale_temps`).

    The host and pid tell which process left it behind if that process died; the random part
    keeps two threads (or two ranks) of one process apart.
    """
    path = Path(path)
    remove_stale_temps(path)
    return path.with_name(f"{path.name}.{tag}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _stale(temp: TempName, entry: Path) -> bool:
    if temp.host == _HOST:
        # a live pid may be a new process that reused it: kept, to be safe
        return temp.pid != os.getpid() and not _writer_alive(temp.pid)
    try:
        return time.time() - entry.lstat().st_mtime > FOREIGN_STALE_AFTER_S
    except OSError:
        return False


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of `path` (and only of `path`) whose writer is dead; returns them.

    A stale ``.old-`` aside is the previous output that `publish_dir` had moved away when its
    writer died: it is put back if `path` is missing, removed otherwise. Failures (a read-only
    directory, a racing cleaner) are ignored: the caller's own write reports what matters.
    """
    path = Path(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in sorted(entries, key=lambda e: e.name):
        temp = parse_temp(entry.name)
        if temp is None or temp.output != path.name or not _stale(temp, entry):
            continue
        try:
            if temp.tag == "old" and not (path.exists() or path.is_symlink()):
                os.rename(entry, path)
                continue
            remove_path(entry)
        except OSError:
            continue
        removed.append(entry)
    return removed


def output_of(path: str | os.PathLike) -> Path:
    """The output a path belongs to: `path` itself, or for a temporary (or a file inside one)
    the output it is being written for."""
    path = Path(path)
    for i, part in enumerate(path.parts):
        temp = parse_temp(part)
        if temp is not None:
            return Path(*path.parts[:i], temp.output)
    return path


# errno → (what happened, the fix); anything else is not the user's to fix and keeps its
# traceback
_REFUSED_WRITES = {
    errno.ENOSPC: ("no space left on device", "free space there or choose another directory"),
    errno.EDQUOT: ("disk quota exceeded", "free space there or choose another directory"),
    errno.EROFS: ("read-only file system", "choose a directory on a writable file system"),
    errno.EACCES: ("permission denied", "fix its permissions or choose another directory"),
    errno.EPERM: ("operation not permitted", "fix its permissions or choose another directory"),
}


def output_error(exc: OSError, path: str | os.PathLike | None = None) -> OutputError | None:
    """The one-line user error for an OSError of a full disk or a refused write at `path`
    (default: the file the error names, a temporary mapped to its output); None for others."""
    known = _REFUSED_WRITES.get(exc.errno)
    if known is None:
        return None
    where = path if path is not None else exc.filename
    problem, fix = known
    if where is None:  # a write() or fsync() names no file
        return OutputError(f"{problem}: {fix.replace(' there', '')}")
    return OutputError(f"{problem} at {output_of(os.fsdecode(where))}: {fix}")


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Report a full disk or a refused write while writing the output `path` as an
    `OutputError` naming `path`: the OSError of a write() names no file, and that of a
    temporary names the temporary."""
    try:
        yield
    except OSError as exc:
        error = output_error(exc, path)
        if error is None:
            raise
        raise error from None


def exists_error(path: str | os.PathLike) -> StoreError:
    """The one error for refusing to replace an existing output."""
    return StoreError(f"{path} exists; pass --overwrite (or overwrite=True) to replace it")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary sibling of `path` for writing; on a clean exit it is flushed, synced
    and renamed over `path`, on an exception removed. A reader sees either the old file or the
    complete new one, never a truncated one."""
    path = Path(path)
    with writing(path):
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
    only then the old one deleted; if the second rename fails the old one is put back (and if
    the process dies in between, the next writer of `path` puts it back: `remove_stale_temps`).
    Without it an existing `path` is an error and `tmp` is left for the caller to clean up.

    Directories cannot be swapped with one atomic ``rename`` (it refuses a non-empty target),
    so there is a moment where `path` is absent; it never holds a partial store.
    """
    tmp, path = Path(tmp), Path(path)
    with writing(path):
        if not (path.exists() or path.is_symlink()):
            # os.rename onto an *empty* directory would succeed on POSIX; the check above is
            # what keeps us from silently merging into one. A racing writer can still slip in.
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
