"""`hpcds demo --quick`: the whole pipeline (benchmark → train both models → sample → evaluate
→ report) runs end to end in its CI size and prints the report path and a 6-line summary.
With --finetune, the high-noise fine-tuning stage follows on the same run (one demo for both
tests): fine-tuned from the diffusion run's weights, sampled, and scored before/after."""

import contextlib
import io
import re

import pytest
import yaml
import zarr

from hpcds.cli.main import main
from hpcds.config.load import load_config

FINETUNE_STEPS = 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(out dir, stdout lines, stderr) of one `hpcds demo --quick --finetune-steps 2` run."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["demo", "--quick", "--finetune-steps", str(FINETUNE_STEPS),
                     "--out", str(out), "--quiet",
                     "model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1"])
    assert code == 0, stderr.getvalue()[-2000:]
    return out, stdout.getvalue().strip().splitlines(), stderr.getvalue()


def test_demo_quick_end_to_end(demo):
    out, lines, _ = demo
    assert lines[0] == f"report: {out / 'eval' / 'index.html'}"
    summary = lines[1:7]
    assert summary[0].startswith("CRPS / oracle CRPS: forecast")
    assert summary[5].startswith("against the law (source/oracle, 1 = right): forecast high-k")
    for source in ("oracle 1.000", "deterministic", "interpolation"):
        assert source in summary[0]
    assert summary[1].startswith("spectral ratio at high wavenumbers")
    assert summary[2].startswith("spread/skill")
    for name in ("scores.json", "index.html", "spectra.png", "crps.png", "maps_2t.png"):
        assert (out / "eval" / name).is_file()
    # the deterministic baseline trains evaluation.baseline_steps (QUICK: 20), the model 30
    for run, steps in (("train_diffusion", 30), ("train_deterministic", 20)):
        assert (out / run / f"step-{steps:07d}.pt").is_file()
        assert not (out / run / f"step-{steps + 10:07d}.pt").is_file()


def test_demo_quick_finetune(demo):
    """The fine-tuning stage: its own run dir, initialised from the diffusion run's
    checkpoint in the high-noise regime; both ensembles scored in one report."""
    import json

    from hpcds.checkpoint import LATEST, load_checkpoint
    from hpcds.train.schedule import lr_at

    out, lines, err = demo
    head = lines[7]
    assert head.startswith(f"high-noise fine-tuning ({FINETUNE_STEPS} steps from ")
    assert head.endswith(f"report: {out / 'eval_finetune' / 'index.html'}")
    summary = lines[8:14]
    assert summary[0].startswith("CRPS / oracle CRPS: before ")
    assert re.search(r"against the law .*: before high-k .* \| after high-k ", summary[5])
    for line in (summary[0], summary[1], summary[2]):  # CRPS, spectra, spread/skill
        assert re.search(r"\bbefore \d", line) and re.search(r"\bafter \d", line), line
    assert "oracle 1.000" in summary[0] and "deterministic" in summary[0]
    assert lines[14].startswith("fine-tuning validation loss (EMA weights")
    assert "finetune_sample" in err  # the stage's time in the closing line

    scores = json.loads((out / "eval_finetune" / "scores.json").read_text())
    assert scores["sources"][:2] == ["before", "after"]
    assert scores["forecasts"]["before"].endswith("ensemble.zarr")
    assert scores["forecasts"]["after"].endswith("ensemble_finetuned.zarr")
    for label in ("before", "after"):
        crps = scores["scores"][label]["2t"][scores["regions"][0]]["crps_fair"]
        assert crps is not None and crps > 0
    for name in ("index.html", "spectra.png", "crps.png"):
        assert (out / "eval_finetune" / name).is_file()
    # each model sampled from its own training σ_max, with the same sampler and noise seed
    ident = {label: zarr.open_group(str(out / name), mode="r").attrs["identity"]
             for label, name in (("before", "ensemble.zarr"),
                                 ("after", "ensemble_finetuned.zarr"))}
    demo_sigma_max = load_config("demo").diffusion.sigma_max  # 10: coloured noise
    assert (ident["before"]["sigma_max"], ident["after"]["sigma_max"]) == (demo_sigma_max, 1e5)
    for key in ("solver", "steps", "seed", "sigma_min"):
        assert ident["before"][key] == ident["after"][key]

    source_path = out / "train_diffusion" / LATEST
    tuned = load_checkpoint(out / "train_finetune" / LATEST)
    cfg = yaml.safe_load(tuned["config"])
    assert tuned["step"] == FINETUNE_STEPS
    assert cfg["training"]["init_from"].startswith(str(out / "train_diffusion"))
    assert cfg["diffusion"]["regime"] == "karras_uniform"
    assert cfg["diffusion"]["sigma_max"] == 1e5
    # the weights are the diffusion run's moved by FINETUNE_STEPS AdamW steps (each moves a
    # weight by at most ~its rate, plus the decay); the seeded initialisation, or the weights
    # of the diffusion run's first steps, are ~1e-2 away
    t = cfg["training"]
    budget = sum(lr_at(s, t["lr"], t["lr_min"], t["warmup_steps"], t["steps"])
                 for s in range(FINETUNE_STEPS))
    source = load_checkpoint(source_path)["model"]
    moved = max(float((tuned["model"][k] - w).abs().max()) for k, w in source.items())
    assert moved <= 1.5 * budget, f"fine-tuned weights {moved} away from the source's"


def test_perf_diagnostics_run_on_the_demo(demo, capsys):
    """perf/law_variance.py and perf/noise_gain.py (issue 12's diagnostics) on the quick demo:
    the members' variance over the law's is positive and finite for every variable, and the
    denoiser's noise gain at σ = 0.02 is close to 1 (it can remove almost none of so small a
    noise) and falls towards σ = 5, as the Wiener gain beside it does."""
    import json
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))
    import law_variance
    import noise_gain
    import skill_run

    out, _, _ = demo
    result = json.loads((out / "eval" / "scores.json").read_text())
    rows = skill_run.per_variable(result)  # issue 12's per-variable figures, from the scores
    spec = result["spectra"]
    for v, row in rows.items():
        assert row["worst_bin_above_lr_nyquist"] == spec["worst_bin"]["forecast"][v]
        assert row["worst_bin_over_oracle"] == spec["worst_bin_over_oracle"]["forecast"][v]
        assert row["oracle_worst_bin"] == spec["worst_bin"]["oracle"][v]
    assert law_variance.main([str(out), "--law-members", "4"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    ratios = [float(x) for x in re.findall(r" (\d+\.\d+)", line)]
    assert line.startswith("variance over the law's:") and len(ratios) == 5
    assert all(0 < r < 100 for r in ratios), line
    cfg = load_config(str(out / "demo.config.yaml"))
    g, s2 = noise_gain.gains(cfg, out, seed=0)
    assert g.shape == (len(noise_gain.SIGMAS), 5) and s2.shape == (5,)
    assert np.isfinite(g).all() and (0 < s2).all() and (s2 <= 1.5).all()
    assert (g[0] > 0.5).all() and (np.abs(g[-1]) < g[0]).all(), g
