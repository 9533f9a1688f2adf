"""Several labelled forecast stores in one evaluation (`--forecast LABEL=STORE`, repeated):
every label must get exactly the numbers of its store's single-forecast run (the reference),
the figures must show every label, and bad labels or mismatched stores are one-line errors."""

import json
import re

import numpy as np
import pytest
from conftest import OVERRIDES, write_oracle_store

from hpcds.cli.main import main
from hpcds.evaluate import report
from hpcds.evaluate.run import _Extremes, evaluate
from hpcds.evaluate.sources import parse_forecast_specs


def _cli(out, *forecasts, dest="cli_multi"):
    args = ["evaluate", "tiny", f"run.out_dir={out}", *OVERRIDES, "--quiet", "--out",
            str(out / dest)]
    for f in forecasts:
        args += ["--forecast", f]
    return main(args)


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("hpcds: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def test_parse_forecast_specs():
    assert parse_forecast_specs(["a.zarr"]) == {"forecast": "a.zarr"}
    assert parse_forecast_specs(["before=r/x.zarr", "after=r/lr=1/y.zarr"]) == {
        "before": "r/x.zarr", "after": "r/lr=1/y.zarr"}
    # text before "=" with a path separator is part of a bare store, not a label
    assert parse_forecast_specs(["runs/lr=1e-4/e.zarr"]) == {"forecast": "runs/lr=1e-4/e.zarr"}


@pytest.mark.parametrize("specs, words", [
    (["=s.zarr"], ["empty"]),
    (["oracle=s.zarr"], ["'oracle'", "taken"]),
    (["truth=s.zarr"], ["'truth'", "taken"]),
    (["a=s.zarr", "a=t.zarr"], ["'a'", "twice"]),
    (["s.zarr", "t.zarr"], ["'forecast'", "twice"]),  # two bare stores: both "forecast"
    (["a b=s.zarr"], ["'a b'"]),
    (["a="], ["no store"]),
])
def test_bad_labels_are_one_line_errors(tmp_path, capsys, specs, words):
    assert _cli(tmp_path, *specs) == 2
    _one_line_error(capsys, *words)


@pytest.mark.parametrize("kind, words", [("dates", ["'late'", "other complete dates"]),
                                         ("members", ["'small'", "4 members"])])
def test_mismatched_stores_are_one_line_errors(bench, capsys, kind, words):
    cfg, out = bench
    label = "late" if kind == "dates" else "small"
    store = out / f"{kind}.zarr"
    if not store.exists():
        write_oracle_store(cfg, store, seed=5, **({"skip_dates": (2,)} if kind == "dates"
                                                  else {"members": 4}))
    assert _cli(out, f"ok={out / 'oracle_forecast.zarr'}", f"{label}={store}") == 2
    _one_line_error(capsys, *words)


def _legend_and_titles(fig):
    texts = {t.get_text() for ax in fig.axes if ax.get_legend()
             for t in ax.get_legend().get_texts()}
    return texts | {ax.get_title() for ax in fig.axes}


def test_two_stores_three_labels_match_their_single_runs(bench, single_run, capsys,
                                                         monkeypatch):
    cfg, out = bench
    s1, s2 = out / "oracle_forecast.zarr", write_oracle_store(cfg, out / "s2.zarr", seed=777)
    single2 = evaluate(cfg, s2, out_dir=out / "eval_s2", progress=False)
    drawn = {}  # PNG name → legend entries and axes titles, read off the figure objects
    save = report._save

    def spy(fig, path):
        drawn[path.name] = _legend_and_titles(fig)
        return save(fig, path)

    monkeypatch.setattr(report, "_save", spy)
    # a and c: one store under two labels; b another store
    assert _cli(out, f"a={s1}", f"b={s2}", f"c={s1}") == 0
    summary = capsys.readouterr().out.strip().splitlines()[1:]
    multi = json.loads((out / "cli_multi" / "scores.json").read_text())
    assert multi["sources"] == ["a", "b", "c", "oracle", "interpolation"]
    assert multi["forecasts"] == {"a": str(s1.resolve()), "b": str(s2.resolve()),
                                  "c": str(s1.resolve())}
    ref = {"a": single_run, "b": single2, "c": single_run}
    for label, single in ref.items():
        assert multi["scores"][label] == single["scores"]["forecast"], label
        assert multi["crps_ratio_to_oracle"][label] == \
            single["crps_ratio_to_oracle"]["forecast"]
        for key in ("power", "high_k_ratio"):
            assert multi["spectra"][key][label] == single["spectra"][key]["forecast"]
        for key in ("quantiles", "qq"):
            assert multi["extremes"][key][label] == single["extremes"][key]["forecast"]
    assert multi["scores"]["a"] != multi["scores"]["b"]  # the comparison can tell them apart
    for s in ("oracle", "interpolation"):
        assert multi["scores"][s] == single_run["scores"][s]
        assert multi["extremes"]["quantiles"][s] == single_run["extremes"]["quantiles"][s]

    def number(single, line=0):  # the single run's number of "forecast" on a summary line
        return re.search(r"forecast ([^,]+)", single["summary"][line]).group(1)

    one = single_run["summary"][0].split(": ", 1)[1].split(", ")
    assert summary[0] == (f"CRPS / oracle CRPS: a {number(single_run)}, b {number(single2)}, "
                          f"c {number(single_run)}, " + ", ".join(one[1:]))
    assert summary[2] == (f"spread/skill (1 = calibrated): a {number(single_run, 2)}, "
                          f"b {number(single2, 2)}, c {number(single_run, 2)}, "
                          + single_run["summary"][2].split(", ", 1)[1])
    assert summary[4] == single_run["summary"][4]

    every, ensembles = {"a", "b", "c", "oracle", "interpolation"}, {"a", "b", "c", "oracle"}
    for name, labels in (("crps.png", every), ("spectra.png", every | {"truth"}),
                         ("qq.png", every), ("rank_histograms.png", ensembles),
                         ("spread_skill.png", ensembles),
                         ("maps_2t.png", {f"{s} member {k}" for s in "abc" for k in (1, 2)})):
        assert labels <= drawn[name], (name, labels - drawn[name])
    page = (out / "cli_multi" / "index.html").read_text()
    assert all(name in page for name in drawn) and str(s2.resolve()) in page


def test_extremes_subsample_does_not_depend_on_other_sources():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 1, 40)), rng.normal(size=(3, 1, 40))
    alone, together = _Extremes(["v"], 2, seed=1, cap=20), _Extremes(["v"], 2, seed=1, cap=20)
    for n in range(2):  # 10 of 120 values kept per date
        alone.update("a", x, n)
        together.update("b", y, n)
        together.update("a", x, n)
        together.update("c", x, n)
    a = np.concatenate(alone.values["a"]["v"])
    assert a.size == 20 and set(a) <= set(x.ravel())
    np.testing.assert_array_equal(np.concatenate(together.values["a"]["v"]), a)
    np.testing.assert_array_equal(np.concatenate(together.values["c"]["v"]), a)
