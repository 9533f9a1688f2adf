"""hpcds.atomic: temporaries' names, and refused writes as one-line user errors."""

from __future__ import annotations

import errno
import os

import pytest

from hpcds import atomic
from hpcds.atomic import output_error, output_of, parse_temp, temp_sibling, writing
from hpcds.errors import OutputError


def test_temp_sibling_names_parse_back(tmp_path):
    tmp = temp_sibling(tmp_path / "hr.zarr")
    temp = parse_temp(tmp.name)
    assert tmp.parent == tmp_path
    assert (temp.output, temp.tag, temp.host, temp.pid) == ("hr.zarr", "tmp", atomic._HOST,
                                                            os.getpid())
    assert parse_temp("hr.zarr") is None and parse_temp("hr.zarr.tmp-123-0123abcd") is None
    assert output_of(tmp / "data" / "0.0.0.0") == tmp_path / "hr.zarr"
    assert output_of(tmp_path / "hr.zarr") == tmp_path / "hr.zarr"


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
