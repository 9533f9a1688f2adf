"""`hpcds demo --quick`: the whole pipeline (benchmark → train both models → sample → evaluate
→ report) runs end to end in its CI size and prints the report path and a 5-line summary."""

from hpcds.cli.main import main


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet",
                 "model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"report: {out / 'eval' / 'index.html'}"
    summary = lines[1:]
    assert len(summary) == 5
    assert summary[0].startswith("CRPS / oracle CRPS: forecast")
    for source in ("oracle 1.000", "deterministic", "interpolation"):
        assert source in summary[0]
    assert summary[1].startswith("spectral ratio at high wavenumbers")
    assert summary[2].startswith("spread/skill")
    for name in ("scores.json", "index.html", "spectra.png", "crps.png", "maps_2t.png"):
        assert (out / "eval" / name).is_file()
    assert (out / "train_diffusion" / "latest.pt").is_file()
    assert (out / "train_deterministic" / "latest.pt").is_file()
