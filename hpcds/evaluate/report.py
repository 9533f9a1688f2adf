"""The evaluation report: PNG figures (matplotlib, Agg) and an `index.html` showing them.

    write_report(result, out_dir, hr_grid)   # result: `hpcds.evaluate.run.evaluate(...)`

Figures, one per kind with every source on it (each its own colour and legend entry; several
forecast stores are told apart by their labels): "who's who" maps per variable (LR input
interpolated, truth, two members of each forecast, deterministic, an oracle draw; one shared
colour scale), log-log spectra of every source with the truth, CRPS by variable and region per
source, spread/skill, rank histograms and q-q plots of the pooled values against the truth's.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hpcds.atomic import atomic_open, atomic_write_text
from hpcds.evaluate.run import MAP_MEMBERS, member_map_key
from hpcds.evaluate.sources import ensemble_sources

BASELINE_COLORS = {"truth": "black", "oracle": "tab:green", "deterministic": "tab:orange",
                   "interpolation": "tab:red"}
# the forecasts in order: the first (a lone "forecast" too) keeps the blue it always had
FORECAST_COLORS = ("tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                   "tab:gray", "navy", "gold", "teal")
MAP_TITLES = {"lr_interp": "LR input (interpolated)", "truth": "truth (HR)",
              "deterministic": "deterministic", "oracle_0": "oracle draw"}


def colors(result) -> dict[str, str]:
    """source → colour: the baselines and the truth fixed, the forecasts in turn (cycling
    past ten; the legend labels still tell them apart)."""
    out = dict(BASELINE_COLORS)
    for j, label in enumerate(result["forecasts"]):
        out[label] = FORECAST_COLORS[j % len(FORECAST_COLORS)]
    return out


def map_titles(result) -> dict[str, str]:
    """map key → panel title, in panel order: the LR input, the truth, each forecast's
    members, the deterministic model, an oracle draw."""
    members = {member_map_key(label, k): f"{label} member {k + 1}"
               for label in result["forecasts"] for k in range(MAP_MEMBERS)}
    return {**{k: MAP_TITLES[k] for k in ("lr_interp", "truth")}, **members,
            **{k: MAP_TITLES[k] for k in ("deterministic", "oracle_0")}}


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
    titles = map_titles(result)
    keys = [k for k in titles if k in maps]
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
            ax.set_title(titles[k])
            ax.set_xlabel("longitude [°E]")
            ax.set_ylabel("latitude [°N]")
        fig.colorbar(im, ax=list(axes[:len(keys)]), label=_label(result, v), shrink=0.8)
        fig.suptitle(f"who's who: {v} on {result['grid']}, {maps.get('date', '')}")
        name = _save(fig, out / f"maps_{v}.png")
        figs.append((name, (f"{v}: the LR input interpolated to HR, the truth, two members "
                            "of each forecast, the deterministic model and an oracle draw "
                            f"(first date, {maps.get('date', '')}), one colour scale.")))
    return figs


def plot_spectra(result, out: Path):
    spec = result.get("spectra")
    if not spec:
        return []
    k = np.asarray(spec["k"], float)
    color = colors(result)
    fig, axes = _grid_panels(len(result["variables"]))
    for ax, v in zip(axes, result["variables"]):
        for s in ("truth", *result["sources"]):
            if s not in spec["power"]:
                continue
            p = np.asarray(spec["power"][s][v], float)
            ok = (k > 0) & (p > 0)
            ax.loglog(k[ok], p[ok], color=color[s], lw=2.5 if s == "truth" else 1.5,
                      label=s, ls={"interpolation": "--", "oracle": ":"}.get(s, "-"),
                      zorder=3 if s == "oracle" else 2)
        ax.set_title(f"power spectrum: {v}")
        ax.set_xlabel(spec["k_label"])
        ax.set_ylabel(f"power [({result['units'].get(v, '')})²]")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    return [(_save(fig, out / "spectra.png"),
             ("Power spectra (mean over members and dates) of every source with the truth's; "
             "a diffusion ensemble should follow the truth (black) at high wavenumbers, "
             "interpolation lacks the small scales."))]


def plot_crps(result, out: Path):
    scores, regions, variables = result["scores"], result["regions"], result["variables"]
    sources, color = result["sources"], colors(result)
    fig, axes = _grid_panels(len(variables))
    width = 0.8 / len(sources)
    x = np.arange(len(regions))
    for ax, v in zip(axes, variables):
        for j, s in enumerate(sources):
            vals = [scores[s][v][r].get("crps_fair") or np.nan for r in regions]
            ax.bar(x + (j - (len(sources) - 1) / 2) * width, vals, width, label=s,
                   color=color[s])
        ax.set_xticks(x, regions, rotation=20)
        ax.set_title(f"fair CRPS: {v}")
        ax.set_ylabel(f"CRPS [{result['units'].get(v, '')}]")
    axes[0].legend(fontsize=8)
    return [(_save(fig, out / "crps.png"),
             ("Area-weighted fair CRPS (lower is better) by variable and region for every "
             "source; the oracle is the best any ensemble of this size can do."))]


def plot_spread_skill(result, out: Path):
    scores, variables, region = result["scores"], result["variables"], result["regions"][0]
    sources, color = ensemble_sources(result), colors(result)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    x = np.arange(len(variables))
    width = min(0.35, 0.8 / len(sources))
    for j, s in enumerate(sources):
        vals = [scores[s][v][region].get("spread_skill") or np.nan for v in variables]
        ax.bar(x + (j - 0.5 * (len(sources) - 1)) * width, vals, width, label=s,
               color=color[s])
    ax.axhline(1.0, color="black", lw=1, ls="--", label="calibrated")
    ax.set_xticks(x, variables)
    ax.set_ylabel("spread / RMSE of the ensemble mean")
    ax.set_title(f"spread/skill ratio ({region})")
    ax.legend(fontsize=8)
    return [(_save(fig, out / "spread_skill.png"),
             "Spread/skill ratio (1 = calibrated, < 1 under-dispersive, > 1 over-dispersive).")]


def plot_rank_histograms(result, out: Path):
    scores, variables, region = result["scores"], result["variables"], result["regions"][0]
    sources, color = ensemble_sources(result), colors(result)
    fig, axes = _grid_panels(len(variables))
    for ax, v in zip(axes, variables):
        for s in sources:
            h = np.asarray(scores[s][v][region]["rank_histogram"], float)
            h = h / h.sum() if h.sum() > 0 else h
            ax.step(np.arange(len(h)), h, where="mid", color=color[s], label=s)
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
    variables, color = result["variables"], colors(result)
    fig, axes = _grid_panels(len(variables))
    for ax, v in zip(axes, variables):
        lo, hi = np.inf, -np.inf
        for s in result["sources"]:
            if v in qq.get(s, {}):
                # "forecast": the source's quantiles, whatever the source's label
                t, f = np.asarray(qq[s][v]["truth"]), np.asarray(qq[s][v]["forecast"])
                ax.plot(t, f, ".-", ms=3, lw=0.8, color=color[s], label=s)
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
    stores = "".join(f"forecast {html.escape(label)}: {html.escape(path)}<br>"
                     for label, path in result["forecasts"].items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>hpcds evaluation</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}"
            "img{max-width:100%}figure{margin:2em 0}</style></head><body>"
            f"<h1>hpcds evaluation: {html.escape(result['grid'])}</h1>"
            f"<p>{stores}truth {html.escape(result['truth_store'])}</p><pre>{summary}</pre>"
            f'<p>Scores: <a href="scores.json">scores.json</a></p>{rows}</body></html>')
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
