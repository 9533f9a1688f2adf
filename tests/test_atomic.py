"""hpcds.atomic: temporaries' names, the cleanup of dead writers' temporaries, and refused
writes as one-line user errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from hpcds import atomic
from hpcds.atomic import (output_error, output_of, parse_temp, remove_stale_temps,
                          temp_sibling, writing)
from hpcds.errors import OutputError


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def temp_name(output: str, pid: int, host: str = atomic._HOST, tag: str = "tmp") -> str:
    return f"{output}.{tag}-{host}-{pid}-0123abcd"


def test_temp_sibling_names_parse_back(tmp_path):
    tmp = temp_sibling(tmp_path / "hr.zarr")
    temp = parse_temp(tmp.name)
    assert tmp.parent == tmp_path
    assert (temp.output, temp.tag, temp.host, temp.pid) == ("hr.zarr", "tmp", atomic._HOST,
                                                            os.getpid())
    assert parse_temp("hr.zarr") is None and parse_temp("hr.zarr.tmp-123-0123abcd") is None
    assert output_of(tmp / "data" / "0.0.0.0") == tmp_path / "hr.zarr"
    assert output_of(tmp_path / "hr.zarr") == tmp_path / "hr.zarr"


def test_only_dead_writers_temporaries_of_that_output_go(tmp_path, dead_pid):
    out = tmp_path / "lr.zarr"
    out.mkdir()
    dead = tmp_path / temp_name("lr.zarr", dead_pid)
    (dead / "data").mkdir(parents=True)
    dead_file = tmp_path / temp_name("lr.zarr", dead_pid).replace("0123abcd", "0123abce")
    dead_file.write_text("partial")
    kept = [tmp_path / temp_name("lr.zarr", os.getpid()),  # this process: still writing
            tmp_path / temp_name("lr.zarr", 1),  # alive (or reused): not provably dead
            tmp_path / temp_name("hr.zarr", dead_pid),  # another output's
            tmp_path / temp_name("lr.zarr", dead_pid, host="othernode")]  # recent, elsewhere
    for path in kept:
        path.mkdir()
    assert sorted(remove_stale_temps(out)) == sorted([dead, dead_file])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["lr.zarr",
                                                                 *(p.name for p in kept)])


def test_another_hosts_temporary_goes_when_old(tmp_path):
    foreign = tmp_path / temp_name("s.zarr", 7, host="othernode")
    foreign.mkdir()
    old = time.time() - atomic.FOREIGN_STALE_AFTER_S - 60
    os.utime(foreign, (old, old))
    assert remove_stale_temps(tmp_path / "s.zarr") == [foreign]


def test_an_output_moved_aside_by_a_killed_writer_is_put_back(tmp_path, dead_pid):
    """Killed between publish_dir's two renames: the old output is only in the aside."""
    aside = tmp_path / temp_name("s.zarr", dead_pid, tag="old")
    aside.mkdir()
    (aside / "kept").write_text("old store")
    new = tmp_path / temp_name("s.zarr", dead_pid)
    new.mkdir()
    temp_sibling(tmp_path / "s.zarr")  # any next writer of s.zarr cleans up first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    assert (tmp_path / "s.zarr" / "kept").read_text() == "old store"
    # with the output present, a dead writer's aside is just removed
    aside.mkdir()
    remove_stale_temps(tmp_path / "s.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


@pytest.mark.parametrize("code, text", [
    (errno.ENOSPC, "no space left on device at {p}: free space there or choose another "
                   "directory"),
    (errno.EDQUOT, "disk quota exceeded at {p}: free space there"),
    (errno.EROFS, "read-only file system at {p}: choose a directory on a writable file "
                  "system"),
    (errno.EACCES, "permission denied at {p}: fix its permissions or choose another "
                   "directory"),
])
def test_refused_writes_name_the_output(tmp_path, code, text):
    out = tmp_path / "hr.zarr"
    with pytest.raises(OutputError) as raised:
        with writing(out):
            raise OSError(code, os.strerror(code))  # a write(): no file named
    assert str(raised.value).startswith(text.format(p=out))
    # without a `writing` context the file the error names counts, a temporary's output
    named = OSError(code, os.strerror(code), str(temp_sibling(out) / "data" / "0.0"))
    assert str(output_error(named)).startswith(text.format(p=out))
    assert str(output_error(OSError(code, "x"))).startswith(text.split(" at ")[0] + ":")


def test_other_os_errors_stay_bugs(tmp_path):
    assert output_error(FileNotFoundError(errno.ENOENT, "gone", "x")) is None
    with pytest.raises(IsADirectoryError):
        with writing(tmp_path):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
