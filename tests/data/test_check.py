"""`hpcds data benchmark` + `hpcds data check` end to end, and the bad-input matrix: every
broken pair fails with its own one-line message, and nothing existing is written over."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.store import create_store, open_store
from hpcds.grids import make_grid

N_DATES = 12


def _args(out_dir, *extra):
    return ["tiny", f"run.out_dir={out_dir}", f"benchmark.n_dates={N_DATES}", "--quiet", *extra]


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["data", "benchmark", *_args(out)]) == 0
    return out


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _rewrite(src: Path, dst: Path, grid_cfg, transform=None, dates=None, variables=None):
    """Copy a store through the writer with its values (T, V, E, C) transformed."""
    store = open_store(src)
    values = store.read(slice(None))
    if transform is not None:
        values = transform(values)
    keep_t = np.arange(len(store.dates)) if dates is None else dates
    names = store.variables if variables is None else variables
    v_index = store.variable_index(names)
    with create_store(dst, grid=make_grid(grid_cfg), variables=names,
                      dates=store.dates[keep_t], frequency=store.frequency,
                      chunk_cells=1024) as writer:
        for k, t in enumerate(keep_t):
            writer.write(k, values[t][v_index])
    return dst


def _check(bench, capsys, *overrides):
    code = main(["data", "check", *_args(bench, *overrides)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_benchmark_then_check_passes(bench, capsys):
    code, out, err = _check(bench, capsys)
    assert code == 0, err
    assert "data check passed" in out
    assert (bench / "data" / "config.yaml").is_file()  # resolved config beside the outputs
    for var in ("2t", "10u", "10v", "msl", "tp"):
        assert f"  {var}" in out


def test_benchmark_never_overwrites_without_flag(bench, capsys):
    before = _tree_digest(bench / "data")
    assert main(["data", "benchmark", *_args(bench)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert _tree_digest(bench / "data") == before


def test_time_shifted_pair_fails_alignment(bench, tmp_path, capsys):
    cfg = load_config("tiny", [f"run.out_dir={bench}"])
    shifted = _rewrite(bench / "data" / "hr.zarr", tmp_path / "hr.zarr", cfg.grid.hr,
                       transform=lambda v: np.roll(v, 4, axis=0))  # HR one day late
    code, _, err = _check(bench, capsys, f"data.hr_store={shifted}")
    assert code == 2
    assert "not aligned" in err and "\n" not in err


def test_space_shifted_pair_fails_alignment(bench, tmp_path, capsys):
    cfg = load_config("tiny", [f"run.out_dir={bench}"])
    grid = make_grid(cfg.grid.hr)

    def roll_east(values):  # 2° eastward shift on the native (lat, lon) raster
        native = grid.to_native(values, axis=-1)
        native = native.reshape(*values.shape[:-1], *grid.field_shape)
        native = np.roll(native, 16, axis=-1).reshape(values.shape)
        return grid.from_native(native, axis=-1)

    shifted = _rewrite(bench / "data" / "hr.zarr", tmp_path / "hr.zarr", cfg.grid.hr,
                       transform=roll_east)
    code, _, err = _check(bench, capsys, f"data.hr_store={shifted}")
    assert code == 2 and "not aligned" in err


def test_missing_dates_fail(bench, tmp_path, capsys):
    cfg = load_config("tiny", [f"run.out_dir={bench}"])
    store = open_store(bench / "data" / "lr.zarr")
    # a gap in the middle: the writer wants regular dates, so declare it missing
    dates = store.dates
    values = store.read(slice(None))
    gap = dates[5]
    with create_store(tmp_path / "lr.zarr", grid=make_grid(cfg.grid.lr),
                      variables=store.variables, dates=dates, frequency=store.frequency,
                      missing_dates=[gap]) as writer:
        for t in range(len(dates)):
            if t != 5:
                writer.write(t, values[t])
    code, _, err = _check(bench, capsys, f"data.lr_store={tmp_path / 'lr.zarr'}")
    assert code == 2
    assert "1 dates missing from the LR store" in err


def test_nans_fail_unless_skipped(bench, tmp_path, capsys):
    cfg = load_config("tiny", [f"run.out_dir={bench}"])

    def poke_nan(values):
        values = values.copy()
        values[3, 0, 0, 100:110] = np.nan
        return values

    bad = _rewrite(bench / "data" / "hr.zarr", tmp_path / "hr.zarr", cfg.grid.hr,
                   transform=poke_nan)
    code, _, err = _check(bench, capsys, f"data.hr_store={bad}")
    assert code == 2 and "NaN" in err and "nan_policy=skip_date" in err
    code, out, err = _check(bench, capsys, f"data.hr_store={bad}", "data.nan_policy=skip_date")
    assert code == 0, err
    assert "1 dates with NaNs skipped" in out


def test_missing_store_and_missing_data_array(bench, tmp_path, capsys):
    code, _, err = _check(bench, capsys, f"data.lr_store={tmp_path / 'nope.zarr'}")
    assert code == 2 and "no store at" in err
    broken = tmp_path / "lr.zarr"
    shutil.copytree(bench / "data" / "lr.zarr", broken)
    shutil.rmtree(broken / "data")
    (broken / ".zmetadata").unlink(missing_ok=True)
    code, _, err = _check(bench, capsys, f"data.lr_store={broken}")
    assert code == 2 and "no `data` array" in err


def test_variable_mismatch(bench, tmp_path, capsys):
    cfg = load_config("tiny", [f"run.out_dir={bench}"])
    lr = _rewrite(bench / "data" / "lr.zarr", tmp_path / "lr.zarr", cfg.grid.lr,
                  variables=["2t", "10u", "10v", "tp"])
    code, _, err = _check(bench, capsys, f"data.lr_store={lr}")
    assert code == 2 and "variables missing from the LR store" in err and "msl" in err


def test_wrong_grid_in_config(bench, capsys):
    code, _, err = _check(bench, capsys, "grid.hr.name=0.25/0.25")
    assert code == 2 and "grid.hr" in err


def test_hr_domain_outside_lr_domain_writes_nothing(tmp_path, capsys):
    code = main(["data", "benchmark", *_args(tmp_path, "grid.lr.area=48/6/44/14",
                                            "grid.lr.margin_deg=0")])
    assert code == 2
    assert "outside the LR domain" in capsys.readouterr().err
    assert not any((tmp_path / "data").glob("*.zarr")) if (tmp_path / "data").exists() else True


def test_check_fails_when_hr_lies_outside_lr(bench, tmp_path, capsys):
    """An LR store cut to a smaller area than the HR grid: the check names the problem."""
    cfg = load_config("tiny", [f"run.out_dir={bench}", "grid.lr.area=48/6/44/14",
                               "grid.lr.margin_deg=0"])
    small = make_grid(cfg.grid.lr)
    store = open_store(bench / "data" / "lr.zarr")
    where = {(round(a, 6), round(b, 6)): i
             for i, (a, b) in enumerate(zip(store.latitudes, store.longitudes))}
    cells = np.array([where[(round(a, 6), round(b, 6))]
                      for a, b in zip(small.latitudes, small.longitudes)])
    values = store.read(slice(None))[..., cells]
    with create_store(tmp_path / "lr.zarr", grid=small, variables=store.variables,
                      dates=store.dates, frequency=store.frequency) as writer:
        for t in range(len(store.dates)):
            writer.write(t, values[t])
    code, _, err = _check(bench, capsys, f"data.lr_store={tmp_path / 'lr.zarr'}",
                          "grid.lr.area=48/6/44/14", "grid.lr.margin_deg=0")
    assert code == 2 and "outside the LR domain" in err
