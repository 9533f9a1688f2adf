"""The evaluation report: PNG figures (matplotlib, Agg) and an `index.html` showing them.

    write_report(result, out_dir, hr_grid)   # result: `hpcds.evaluate.run.evaluate(...)`

Figures: "who's who" maps per variable (LR input interpolated, truth, two members,
deterministic, an oracle draw; one shared colour scale), log-log spectra of every source with
the truth, CRPS by variable and region per source, spread/skill, rank histograms and q-q plots
of the pooled values against the truth's.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hpcds.atomic import atomic_open, atomic_write_text

COLORS = {"truth": "black", "forecast": "tab:blue", "oracle": "tab:green",
          "deterministic": "tab:orange", "interpolation": "tab:red"}
MAP_TITLES = {"lr_interp": "LR input (interpolated)", "truth": "truth (HR)",
              "member_0": "diffusion member 1", "member_1": "diffusion member 2",
              "deterministic": "deterministic", "oracle_0": "oracle draw"}


def _grid_panels(n: int, width: float = 4.0, height: float = 3.2, ncols: int = 3):
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False, constrained_layout=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _save(fig, path: Path) -> str:
    try:
        with atomic_open(path, "wb") as f:  # a full disk must not leave a cut-off PNG
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=110)
    finally:
        plt.close(fig)
    return path.name


def _label(result, v):
    u = result["units"].get(v, "")
    return f"{v} [{u}]" if u else v


def _raster(grid, values):
    if len(grid.field_shape) == 2:
        return grid.to_native(values).reshape(grid.field_shape)
    return None


def plot_maps(result, grid, out: Path) -> list[tuple[str, str]]:
    maps = result.get("maps") or {}
    keys = [k for k in MAP_TITLES if k in maps]
    figs = []
    if not keys:
        return figs
    lat, lon = grid.latitudes, np.where(grid.longitudes > 180, grid.longitudes - 360,
                                        grid.longitudes)
    for vi, v in enumerate(result["variables"]):
        fields = [np.asarray(maps[k])[vi] for k in keys]
        lo, hi = np.percentile(np.concatenate(fields), [1, 99])
        fig, axes = _grid_panels(len(keys), 4.2, 3.3)
        for ax, k, f in zip(axes, keys, fields):
            r = _raster(grid, f)
            if r is not None:
                nl = grid.to_native(lat).reshape(grid.field_shape)
                no = grid.to_native(lon).reshape(grid.field_shape)
                im = ax.pcolormesh(no, nl, r, vmin=lo, vmax=hi, cmap="viridis", shading="auto")
            else:
                im = ax.scatter(lon, lat, c=f, s=2, vmin=lo, vmax=hi, cmap="viridis")
            ax.set_title(MAP_TITLES[k])
            ax.set_xlabel("longitude [°E]")
            ax.set_ylabel("latitude [°N]")
        fig.colorbar(im, ax=list(axes[:len(keys)]), label=_label(result, v), shrink=0.8)
        fig.suptitle(f"who's who: {v} on {result['grid']}, {maps.get('date', '')}")
        name = _save(fig, out / f"maps_{v}.png")
        figs.append((name, (f"{v}: the LR input interpolated to HR, the truth, two diffusion "
                            "members, the deterministic model and an oracle draw "
                            f"(first date, {maps.get('date', '')}), one colour scale.")))
    return figs


def plot_spectra(result, out: Path):
    spec = result.get("spectra")
    if not spec:
        return []
    k = np.asarray(spec["k"], float)
    fig, axes = _grid_panels(len(result["variables"]))
    for ax, v in zip(axes, result["variables"]):
        for s, by_var in spec["power"].items():
            p = np.asarray(by_var[v], float)
            ok = (k > 0) & (p > 0)
            ax.loglog(k[ok], p[ok], color=COLORS.get(s), lw=2.5 if s == "truth" else 1.5,
                      label=s, ls={"interpolation": "--", "oracle": ":"}.get(s, "-"),
                      zorder=3 if s == "oracle" else 2)
        ax.set_title(f"power spectrum: {v}")
        ax.set_xlabel(spec["k_label"])
        ax.set_ylabel(f"power [({result['units'].get(v, '')})²]")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    return [(_save(fig, out / "spectra.png"),
             ("Power spectra (mean over members and dates) of every source with the truth's; "
             "the diffusion ensemble should follow the truth (black) at high wavenumbers, "
             "interpolation lacks the small scales."))]


def plot_crps(result, out: Path):
    scores, regions, variables = result["scores"], result["regions"], result["variables"]
    sources = [s for s in ("forecast", "oracle", "deterministic", "interpolation") if s in scores]
    fig, axes = _grid_panels(len(variables))
    width = 0.8 / len(sources)
    x = np.arange(len(regions))
    for ax, v in zip(axes, variables):
        for j, s in enumerate(sources):
            vals = [scores[s][v][r].get("crps_fair") or np.nan for r in regions]
            ax.bar(x + (j - (len(sources) - 1) / 2) * width, vals, width, label=s,
                   color=COLORS.get(s))
        ax.set_xticks(x, regions, rotation=20)
        ax.set_title(f"fair CRPS: {v}")
        ax.set_ylabel(f"CRPS [{result['units'].get(v, '')}]")
    axes[0].legend(fontsize=8)
    return [(_save(fig, out / "crps.png"),
             ("Area-weighted fair CRPS (lower is better) by variable and region for every "
             "source; the oracle is the best any ensemble of this size can do."))]


def plot_spread_skill(result, out: Path):
    scores, variables, region = result["scores"], result["variables"], result["regions"][0]
    sources = [s for s in ("forecast", "oracle") if s in scores]
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    x = np.arange(len(variables))
    for j, s in enumerate(sources):
        vals = [scores[s][v][region].get("spread_skill") or np.nan for v in variables]
        ax.bar(x + (j - 0.5 * (len(sources) - 1)) * 0.35, vals, 0.35, label=s,
               color=COLORS.get(s))
    ax.axhline(1.0, color="black", lw=1, ls="--", label="calibrated")
    ax.set_xticks(x, variables)
    ax.set_ylabel("spread / RMSE of the ensemble mean")
    ax.set_title(f"spread/skill ratio ({region})")
    ax.legend(fontsize=8)
    return [(_save(fig, out / "spread_skill.png"),
             "Spread/skill ratio (1 = calibrated, < 1 under-dispersive, > 1 over-dispersive).")]


def plot_rank_histograms(result, out: Path):
    scores, variables, region = result["scores"], result["variables"], result["regions"][0]
    sources = [s for s in ("forecast", "oracle") if s in scores]
    fig, axes = _grid_panels(len(variables))
    for ax, v in zip(axes, variables):
        for s in sources:
            h = np.asarray(scores[s][v][region]["rank_histogram"], float)
            h = h / h.sum() if h.sum() > 0 else h
            ax.step(np.arange(len(h)), h, where="mid", color=COLORS.get(s), label=s)
            ax.axhline(1.0 / len(h), color="gray", lw=0.8, ls=":")
        ax.set_title(f"rank histogram: {v}")
        ax.set_xlabel("rank of the truth among the members")
        ax.set_ylabel("frequency")
    axes[0].legend(fontsize=8)
    return [(_save(fig, out / "rank_histograms.png"),
             ("Rank histograms of the truth within the ensemble (flat = reliable; U-shape = "
             "too little spread)."))]


def plot_qq(result, out: Path):
    qq = result["extremes"]["qq"]
    variables = result["variables"]
    fig, axes = _grid_panels(len(variables))
    for ax, v in zip(axes, variables):
        lo, hi = np.inf, -np.inf
        for s, by_var in qq.items():
            if v in by_var:
                t, f = np.asarray(by_var[v]["truth"]), np.asarray(by_var[v]["forecast"])
                ax.plot(t, f, ".-", ms=3, lw=0.8, color=COLORS.get(s), label=s)
                lo, hi = min(lo, t.min(), f.min()), max(hi, t.max(), f.max())
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="1:1")
        ax.set_title(f"q-q vs truth: {v}")
        ax.set_xlabel(f"truth quantile [{result['units'].get(v, '')}]")
        ax.set_ylabel("source quantile")
        ax.locator_params(axis="both", nbins=5)
    axes[0].legend(fontsize=8)
    return [(_save(fig, out / "qq.png"),
             ("Quantile-quantile plots of pooled values (all dates, members and cells) against "
             "the truth, following the tail as far as the sample supports."))]


def write_report(result: dict, out_dir, grid) -> Path:
    """Draw every figure into `out_dir` and write `out_dir/index.html`; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    for plot in (plot_maps,):
        figs += plot(result, grid, out)
    for plot in (plot_spectra, plot_crps, plot_spread_skill, plot_rank_histograms, plot_qq):
        figs += plot(result, out)
    rows = "\n".join(
        f'<figure><img src="{html.escape(n)}" alt="{html.escape(n)}">'
        f"<figcaption>{html.escape(c)}</figcaption></figure>" for n, c in figs)
    summary = "\n".join(html.escape(line) for line in result.get("summary", []))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>hpcds evaluation</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}"
            "img{max-width:100%}figure{margin:2em 0}</style></head><body>"
            f"<h1>hpcds evaluation: {html.escape(result['grid'])}</h1>"
            f"<p>forecast {html.escape(result['forecast_store'])}<br>truth "
            f"{html.escape(result['truth_store'])}</p><pre>{summary}</pre>"
            f'<p>Scores: <a href="scores.json">scores.json</a></p>{rows}</body></html>')
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
