"""The `hpcds` command line: help everywhere, one-line user errors, exit codes."""

import subprocess
import sys

import pytest

from hpcds.cli.main import main

COMMANDS = [[], ["data"], ["data", "benchmark"], ["data", "forcings"], ["data", "check"],
            ["data", "stats"], ["grid"], ["grid", "info"], ["train"], ["sample"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "hpcds")
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: hpcds" in capsys.readouterr().out


def test_grid_info_o2560_reports_26_million_points(capsys):
    assert main(["grid", "info", "O2560"]) == 0
    assert "26,306,560" in capsys.readouterr().out


def test_grid_info_shards_are_balanced(capsys):
    assert main(["grid", "info", "O320", "--shards", "7"]) == 0
    out = capsys.readouterr().out
    assert "421,120" in out
    assert "7 contiguous SFC ranges of 60,160 points" in out  # 421120 = 7 · 60160


def test_unknown_grid_is_a_user_error(capsys):
    assert main(["grid", "info", "Q99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpcds: error:") and "\n" not in err


def test_user_error_has_no_traceback():
    """In a real process: exit 2, one line on stderr, no traceback."""
    run = subprocess.run([sys.executable, "-m", "hpcds.cli.main", "data", "check", "tiny",
                          "data.foo=1", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "unknown config key 'data.foo'" in lines[0]


def test_missing_store_is_a_user_error(tmp_path, capsys):
    code = main(["data", "check", "tiny", f"run.out_dir={tmp_path}", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no store at" in err and str(tmp_path) in err
