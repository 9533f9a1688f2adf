"""The evaluation driver and report on a tiny benchmark, with the oracle itself as the forecast:
its CRPS over the oracle's (a different draw of the same law) must be ≈ 1, every figure and
index.html must exist, and the interpolation must be worse than the oracle."""

import json

import numpy as np
import pytest
from conftest import OVERRIDES

from hpcds.cli.main import main
from hpcds.data.benchmark import VARIABLES
from hpcds.evaluate.report import write_report
from hpcds.grids import make_grid


def test_oracle_as_forecast_scores_and_report(bench, single_run):
    cfg, out = bench
    result = single_run
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert set(scores["sources"]) == {"forecast", "oracle", "interpolation"}
    assert scores["variables"] == list(VARIABLES) and len(scores["dates"]) == 4
    region = scores["regions"][0]
    for v in VARIABLES:
        entry = scores["scores"]["forecast"][v][region]
        for key in ("crps_fair", "rmse", "spread", "spread_skill", "rank_histogram"):
            assert key in entry
        assert entry["crps_fair"] > 0
        ratio = scores["crps_ratio_to_oracle"]["forecast"][v]
        assert 0.8 < ratio < 1.25, (v, ratio)
        assert scores["crps_ratio_to_oracle"]["interpolation"][v] > ratio
    hk = scores["spectra"]["high_k_ratio"]
    assert all(0.7 < hk["forecast"][v] < 1.4 for v in VARIABLES)
    assert all(hk["interpolation"][v] < 0.5 for v in VARIABLES)
    assert "truth" in scores["extremes"]["quantiles"] and "forecast" in scores["extremes"]["qq"]
    assert len(result["summary"]) == 6
    assert result["summary"][0].startswith("CRPS / oracle CRPS: forecast")
    # against the law: the forecast here IS another draw of it, so its spectrum over the
    # oracle's is ≈ 1 per variable; recomputed from the stored power spectra
    spec = scores["spectra"]
    k = np.asarray(spec["k"])
    upper = k > k.max() / 2
    for v in VARIABLES:
        with np.errstate(invalid="ignore", divide="ignore"):  # an empty corner bin: nan
            ratio = (np.asarray(spec["power"]["forecast"][v], dtype=float)
                     / np.asarray(spec["power"]["oracle"][v], dtype=float))
        assert spec["high_k_over_oracle"]["forecast"][v] == pytest.approx(
            np.nanmean(ratio[upper]), rel=1e-12)
        assert 0.7 < spec["high_k_over_oracle"]["forecast"][v] < 1.4
        above = ratio[k > spec["lr_nyquist"]]
        assert spec["worst_bin_over_oracle"]["forecast"][v] in above
        assert abs(np.log(spec["worst_bin_over_oracle"]["forecast"][v])) == pytest.approx(
            np.nanmax(np.abs(np.log(above))))
    assert set(spec["worst_bin_over_oracle"]) == {"forecast"}  # not the baselines
    assert set(spec["worst_bin"]) == {"forecast", "oracle", "interpolation"}
    law = result["summary"][5]
    assert law.startswith("against the law (source/oracle, 1 = right): forecast high-k 2t ")
    assert "worst bin above the LR Nyquist" in law and "tp q0.999 " in law

    index = write_report(result, out / "eval", make_grid(cfg.grid.hr))
    pngs = {p.name for p in (out / "eval").glob("*.png")}
    expected = {f"maps_{v}.png" for v in VARIABLES} | {
        "spectra.png", "crps.png", "spread_skill.png", "rank_histograms.png", "qq.png"}
    assert expected <= pngs
    page = index.read_text()
    assert all(name in page for name in expected)


def test_evaluate_cli(bench, capsys):
    _, out = bench
    rc = main(["evaluate", "tiny", f"run.out_dir={out}", *OVERRIDES, "--quiet",
               "--forecast", str(out / "oracle_forecast.zarr"), "--out", str(out / "cli")])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"report: {out / 'cli' / 'index.html'}"
    assert len(printed) == 7  # the report, the summary (with the law line)
    assert (out / "cli" / "scores.json").is_file()


def test_evaluate_missing_store_is_one_line_error(bench, capsys):
    _, out = bench
    rc = main(["evaluate", "tiny", f"run.out_dir={out}", *OVERRIDES, "--quiet",
               "--forecast", str(out / "nowhere.zarr")])
    assert rc == 2
    assert capsys.readouterr().err.count("\n") == 1
