"""perf/truth_noise.py: the oracle-against-truth figures on blocks of dates, against closed
forms, and the script end to end on a few dates of the tiny config's law."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import truth_noise  # noqa: E402


def _synthetic(n_dates=4, n_var=2, nk=10, n_cells=2000, scale=1.2):
    rng = np.random.default_rng(0)
    k = np.array([0.01, 0.02, 0.03, 0.04, 0.045, 0.06, 0.07, 0.08, 0.09, 0.1])[:nk]
    p_ref = np.ones((n_dates, n_var, nk))
    p_oracle = p_ref.copy()
    p_oracle[:, 0, 6] = 2.5   # variable 0: ×2.5 in one bin above the LR Nyquist
    p_oracle[:, 1, 8] = 0.45  # variable 1: ×0.45 in another
    p_oracle[:, 0, 1] = 9.0   # below the LR Nyquist: ignored by the worst bin
    v_ref = rng.gamma(0.5, size=(n_dates, n_var, n_cells))
    return {"k": k, "variables": ["a", "b"], "p_ref": p_ref, "p_oracle": p_oracle,
            "v_ref": v_ref, "v_oracle": scale * v_ref}


def test_block_figures_match_closed_forms():
    d = _synthetic()
    f = truth_noise.block_figures(d, np.arange(4), k_lr=0.03, tail_var=1)
    np.testing.assert_allclose(f["worst_bin"], [2.5, 0.45])
    # high-k: the mean ratio over k > k_max / 2 = 0.05, i.e. bins 5..9 (k 0.06 .. 0.1)
    np.testing.assert_allclose(f["high_k"], [(4 + 2.5) / 5, (4 + 0.45) / 5])
    np.testing.assert_allclose(f["tails"], [1.2, 1.2], rtol=1e-12)  # quantiles scale


def test_summarise_counts_the_blocks_that_pass():
    d = _synthetic(n_dates=4)
    d["p_oracle"][:2] = 1.0  # the first two dates' oracle matches the truth exactly
    rows = truth_noise.summarise(d, [1, 2, 4], k_lr=0.03, tail_var=1)
    by_n = {r["dates"]: r for r in rows}
    assert [by_n[n]["blocks"] for n in (1, 2, 4)] == [4, 2, 1]
    assert by_n[1]["p_no_x2_bin"] == 0.5 and by_n[2]["p_no_x2_bin"] == 0.5
    assert by_n[4]["p_no_x2_bin"] == 1.0  # (1 + 1 + 2.5 + 2.5)/4 = 1.75 < 2 on the block
    assert all(r["p_tails_within_10pct"] == 0.0 for r in rows)  # 1.2 everywhere
    np.testing.assert_allclose(by_n[4]["worst_bin_median"], [1.75, 1 / 0.725])


def test_script_runs_on_the_tiny_law(tmp_path, capsys):
    out = tmp_path / "tn.json"
    assert truth_noise.main(["--config", "configs/tiny.yaml", "--total", "4", "--blocks", "2",
                             "4", "--members", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "P(no x2 bin)" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["blocks"] for r in rows] == [2, 1]
    for r in rows:
        assert all(p in (0.0, 0.5, 1.0) for p in (r["p_no_x2_bin"], r["p_tails_within_10pct"]))
        # two exact draws against one: the figures are near 1 for the smooth variables
        assert 1.0 <= min(r["worst_bin_median"]) < 2.0
