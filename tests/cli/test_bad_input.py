"""Bad input, as one matrix: every case prints exactly one line `hpcds: error: …` on stderr,
exits with status 2, shows no traceback, and leaves every existing file as it was.

The world (built once, in-process): a 3-date benchmark, a 2-step tiny training run and a
2-member ensemble. Each case runs the CLI in-process on it and compares the hashes of every file
below it before and after. A full disk and a read-only directory are simulated in-process
(`refuse_writes`): the tests run as root, where chmod does not stop a write, and mounting a
tiny or read-only filesystem needs privileges CI may lack; the real chmod variant runs where
it works.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcds.atomic import parse_temp
from hpcds.cli.main import main

MODEL = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
         "model.noise_embedding_dim=16", "model.window=16"]
TRAIN = ["training.steps=2", "training.val_dates=1", "training.warmup_steps=1",
         "training.val_every=100", "training.checkpoint_every=100"]
SAMPLE = ["sampling.steps=2", "sampling.members=2"]


def args(world: Path, *extra: str) -> list[str]:
    return ["tiny", f"run.out_dir={world}", "benchmark.n_dates=3", *MODEL, *TRAIN, *SAMPLE,
            *extra, "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    for command in (["data", "benchmark"], ["train"], ["sample"]):
        assert main([*command, *args(out)]) == 0
    return out


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file, and every directory (new temporaries too)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


# --------------------------------------------------------------- refused writes, simulated

class _NoSpace:
    """An open file whose writes fail as on a full disk: ENOSPC, naming no file."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def refuse_writes(monkeypatch, root: Path, code: int, names: str = "*") -> None:
    """Writes below the entries of `root` named like `names` (files, or anything inside such
    a directory) fail with `code`: ENOSPC on write() (the file opens, as on a full disk),
    EACCES or EROFS already on open, mkdir and rename (as in a read-only directory). Reads
    are untouched."""
    root = os.path.abspath(root)

    def refused(path) -> bool:
        rel = os.path.relpath(os.path.abspath(os.fsdecode(path)), root)
        return rel == "." or not rel.startswith("..") and \
            fnmatch.fnmatch(rel.split(os.sep)[0], names)

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real_open = builtins.open

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and refused(file):
            if code != errno.ENOSPC:
                fail(file)
            return _NoSpace(real_open(file, mode, *a, **k))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)  # pathlib opens through io.open
    if code == errno.ENOSPC:
        return
    for name in ("mkdir", "rename", "replace", "link"):
        real = getattr(os, name)

        def guarded(*a, _real=real, **k):
            target = a[-1] if len(a) > 1 and not isinstance(a[-1], int) else a[0]
            if refused(target):
                fail(target)
            return _real(*a, **k)

        monkeypatch.setattr(os, name, guarded)


def corrupt_copy(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / store.name
    shutil.copytree(store, copy)
    chunk = sorted((copy / "data").glob("0.*"))[0]
    chunk.write_bytes(b"\x00" * chunk.stat().st_size)  # blosc cannot decode it
    return copy


# ------------------------------------------------------------------------------ the cases

CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def yaml_syntax_error(w, tmp, mp):
    (tmp / "bad.yaml").write_text("run: {out_dir: x\n  seed: 1\n")
    return ["data", "check", str(tmp / "bad.yaml"), "--quiet"], "is not valid YAML: "


@case
def yaml_tab_indent(w, tmp, mp):
    (tmp / "tab.yaml").write_text("run:\n\tseed: 1\n")
    return ["data", "check", str(tmp / "tab.yaml"), "--quiet"], "at line 2, column 1"


@case
def yaml_empty(w, tmp, mp):
    (tmp / "empty.yaml").write_text("# nothing yet\n")
    return ["data", "check", str(tmp / "empty.yaml"), "--quiet"], "empty.yaml is empty"


@case
def yaml_list(w, tmp, mp):
    (tmp / "list.yaml").write_text("- run\n")
    return ["data", "check", str(tmp / "list.yaml"), "--quiet"], "holds a list, not a mapping"


@case
def config_file_missing(w, tmp, mp):
    return ["data", "check", str(tmp / "nope.yaml"), "--quiet"], "nope.yaml' not found"


@case
def unknown_key(w, tmp, mp):
    return ["data", "check", *args(w, "data.foo=1")], "unknown config key 'data.foo'"


@case
def wrong_type(w, tmp, mp):
    return (["train", *args(w, "training.lr=fast")],
            "bad value 'fast' for config key 'training.lr'")


@case
def missing_store(w, tmp, mp):
    return (["data", "check", *args(w, f"data.hr_store={tmp}/none.zarr")],
            f"no store at {tmp}/none.zarr; set data.hr_store to an anemoi-datasets store, or "
            "run `hpcds data benchmark` (a synthetic pair)")


@case
def missing_forcings_store(w, tmp, mp):
    return (["data", "check", *args(w, f"data.forcings_store={tmp}/none.zarr")],
            f"no store at {tmp}/none.zarr; set data.forcings_store, run `hpcds data forcings`")


@case
def missing_truth_store(w, tmp, mp):
    return (["evaluate", *args(w), "--forecast", f"{w}/ensemble.zarr", "--truth",
             f"{tmp}/none.zarr", "--out", f"{tmp}/eval"],
            f"no truth store at {tmp}/none.zarr (--truth): pass an HR store")


@case
def static_variable_absent(w, tmp, mp):
    return (["data", "check", *args(w, "data.static.orography=z")],
            f"data.static.orography: the forcings store {w}/data/forcings.zarr has no variable "
            "'z' (it has orog, lsm)")


@case
def static_units_contradict(w, tmp, mp):
    return (["train", *args(w, "data.static.orography_quantity=geopotential")],
            "data.static.orography_quantity: 'orog' in "
            f"{w}/data/forcings.zarr has units 'm', a height; set "
            "data.static.orography_quantity=height")


@case
def forcings_exist(w, tmp, mp):
    return (["data", "forcings", *args(w)],
            f"{w}/data/forcings.zarr exists; pass --overwrite")


@case
def benchmark_exists(w, tmp, mp):
    return ["data", "benchmark", *args(w)], "benchmark stores already exist"


@case
def corrupt_input_chunk(w, tmp, mp):
    bad = corrupt_copy(w / "data" / "hr.zarr", tmp)
    return (["data", "check", *args(w, f"data.hr_store={bad}")],
            f"{bad}: a chunk of `data` is corrupt (error during blosc decompression")


@case
def corrupt_forecast_chunk(w, tmp, mp):
    bad = corrupt_copy(w / "ensemble.zarr", tmp)
    return (["evaluate", *args(w), "--forecast", str(bad), "--out", str(tmp / "eval")],
            "a chunk of `data` is corrupt")


@case
def evaluate_not_an_ensemble(w, tmp, mp):
    return (["evaluate", *args(w), "--forecast", str(w / "data" / "hr.zarr"), "--out",
             str(tmp / "eval")], "--forecast takes an ensemble store written by `hpcds sample`")


@case
def full_disk_benchmark_overwrite(w, tmp, mp):
    refuse_writes(mp, w / "data", errno.ENOSPC)
    return (["data", "benchmark", *args(w), "--overwrite"],
            f"no space left on device at {w}/data/lr.zarr: free space there")


@case
def full_disk_checkpoint(w, tmp, mp):
    refuse_writes(mp, w / "train", errno.ENOSPC, names="step-*")
    return (["train", *args(w, "training.steps=3")],
            f"no space left on device at {w}/train/step-0000003.pt")


@case
def full_disk_sample_overwrite(w, tmp, mp):
    refuse_writes(mp, w, errno.ENOSPC, names="ensemble.zarr*")
    return (["sample", *args(w), "--overwrite"],
            f"no space left on device at {w}/ensemble.zarr")


@case
def read_only_benchmark(w, tmp, mp):
    refuse_writes(mp, w / "data", errno.EACCES)
    return (["data", "benchmark", *args(w), "--overwrite"],
            f"permission denied at {w}/data/lr.zarr: fix its permissions")


@case
def read_only_stats(w, tmp, mp):
    refuse_writes(mp, w / "data", errno.EROFS)
    return (["data", "stats", *args(w)],
            f"read-only file system at {w}/data/statistics.json")


@case
def read_only_train(w, tmp, mp):
    refuse_writes(mp, w / "train", errno.EACCES)
    return ["train", *args(w, "training.steps=3")], f"permission denied at {w}/train/"


@case
def read_only_sample(w, tmp, mp):
    (tmp / "ro").mkdir()
    refuse_writes(mp, tmp / "ro", errno.EACCES)
    return (["sample", *args(w, f"sampling.output={tmp}/ro/e.zarr")],
            f"permission denied at {tmp}/ro/e.zarr")


@case
def resume_with_changed_lr(w, tmp, mp):
    return (["train", *args(w, "training.lr=0.001")],
            "cannot be resumed with this config: training.lr=0.0003 there vs 0.001 here")


@case
def resume_with_changed_hidden_dim(w, tmp, mp):
    return (["train", *args(w, "model.hidden_dim=24")],
            "does not fit this model")  # and config.yaml is not overwritten: the snapshot


# a case that legitimately rewrites files besides failing: those it may change
MAY_CHANGE = {"full_disk_checkpoint": {"train/config.yaml", "train/metrics.jsonl"}}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, world, tmp_path, monkeypatch,
                                                  capsys):
    argv, expected = CASES[name](world, tmp_path, monkeypatch)
    before = snapshot(world)
    code = main(argv)
    err = capsys.readouterr().err
    # progress lines a run printed before failing are not part of the error
    lines = [ln for ln in err.splitlines() if not ln.startswith("train: step")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hpcds: error: "), err
    assert expected in lines[0]
    after = snapshot(world)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= MAY_CHANGE.get(name, set())


def test_a_read_only_directory_for_real(world, tmp_path, capsys):
    """The chmod variant: where chmod stops writes (not as root), a real read-only dir."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        try:
            (ro / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip("chmod does not stop writes here (root): the simulated cases cover it")
        code = main(["data", "stats", *args(world, f"data.stats_file={ro}/stats.json")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == (f"hpcds: error: permission denied at {ro}/stats.json: "
                                     "fix its permissions or choose another directory")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_yaml_error_in_a_real_process(tmp_path):
    (tmp_path / "bad.yaml").write_text("data: [2t\n")
    run = subprocess.run([sys.executable, "-m", "hpcds.cli.main", "data", "check",
                          str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("hpcds: error: config ") and run.stderr.count("\n") == 1


def test_next_benchmark_removes_what_a_killed_one_left(tmp_path):
    """`data benchmark --overwrite` killed with SIGKILL leaves its temporary stores; the next
    run removes those (a dead writer's), and keeps the stores until replaced."""
    common = ["tiny", f"run.out_dir={tmp_path}", "benchmark.n_dates=12", "--quiet"]
    assert main(["data", "benchmark", *common]) == 0
    data = tmp_path / "data"
    writer = subprocess.Popen([sys.executable, "-m", "hpcds.cli.main", "data", "benchmark",
                               *common, "--overwrite"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(parse_temp(p.name) for p in data.iterdir()):
            assert writer.poll() is None and time.monotonic() < deadline, "no temporary seen"
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    left = [p.name for p in data.iterdir() if parse_temp(p.name)]
    assert left and all(parse_temp(n).pid == writer.pid for n in left)
    assert {"lr.zarr", "hr.zarr", "forcings.zarr"} <= {p.name for p in data.iterdir()}

    assert main(["data", "benchmark", *common, "--overwrite"]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["config.yaml", "forcings.zarr",
                                                      "hr.zarr", "lr.zarr"]
