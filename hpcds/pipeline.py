"""The end-to-end pipeline behind `hpcds demo` and `perf/quality.py`:

    benchmark → train the diffusion model and the deterministic (conditional-mean) model
              → sample an ensemble for the held-out dates → evaluate against truth,
                interpolation, the deterministic model and the oracle → report
                (scores.json, plots, index.html)

and, as a second stage (`hpcds demo --finetune`, `run_finetune`), high-noise fine-tuning:

    fine-tune the diffusion model (σ uniform on the Karras ramp up to σ_max = 1e5, from its
    weights) → sample the same held-out dates → evaluate before and after together → report

Only the `training.val_dates` held-out dates (the last ones) are sampled and scored: scores
on dates the model trained on would flatter it.

One function, so the CI-size demo, the full demo and the longer quality benchmark run the
same code path and differ only in their config.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

from hpcds.config.schema import HpcdsConfig, SigmaRegime

FINETUNE_SIGMA_MAX = 1e5  # the high-noise regime's σ_max (hpcds/diffusion/sigma.py)
FINETUNE_STEPS = 300  # `hpcds demo --finetune`'s default (10 with --quick)
# The fine-tune continues the source's EMA (its update count too, so no EMA warm-up): at the
# demo's 0.999 the averaged weights that sampling uses would, after 300 steps, still be 74 %
# the source's (0.999^300). 0.99 averages over ~100 steps: 5 % after 300. A constant, not a
# function of the step count, so that a finished fine-tune can be extended (a resume refuses
# a changed training.ema_decay).
FINETUNE_EMA_DECAY = 0.99


def _stage(name: str) -> float:
    print(f"== {name}", file=sys.stderr, flush=True)
    return time.perf_counter()


def held_out_config(cfg: HpcdsConfig) -> HpcdsConfig:
    """`cfg` restricted to the dates training held out (data.start_date = the first of the
    last training.val_dates dates); all dates when val_dates is 0."""
    from hpcds.data.dates import iso
    from hpcds.data.paired import PairedDataset

    held = copy.deepcopy(cfg)
    if cfg.training.val_dates > 0:
        dates = PairedDataset.from_config(cfg, require_complete=False).dates
        held.data.start_date = iso(dates[-int(cfg.training.val_dates)])
    return held


def _sample_held_out(run_cfg: HpcdsConfig, held_out: HpcdsConfig, checkpoint, output: Path,
                     progress: bool) -> str:
    """Sample `checkpoint` (run_cfg's model and sampler settings) for the held-out dates
    into `output`; returns its path."""
    from hpcds.ensemble.generate import generate

    run_cfg.data.start_date = held_out.data.start_date
    run_cfg.sampling.output = str(output)
    generate(run_cfg, checkpoint=checkpoint, overwrite=True, progress=progress)
    return run_cfg.sampling.output


def _evaluate_and_report(held_out: HpcdsConfig, forecasts, out_dir: Path,
                         deterministic_checkpoint, progress: bool) -> tuple[dict, Path]:
    """Score `forecasts` on the held-out dates into out_dir; (scores, index.html path)."""
    from hpcds.evaluate.report import write_report
    from hpcds.evaluate.run import evaluate
    from hpcds.grids import make_grid

    result = evaluate(held_out, forecasts, out_dir=out_dir,
                      deterministic_checkpoint=deterministic_checkpoint, progress=progress)
    return result, write_report(result, out_dir, make_grid(held_out.grid.hr))


def run_pipeline(cfg: HpcdsConfig, out: str | Path, progress: bool = True, *,
                 benchmark: bool = True, deterministic: bool = True) -> dict:
    """Run every stage into `out`; returns {"result": evaluate()'s dict (scores, summary),
    "report": index.html path, "times": seconds per stage, "train": the training
    summaries}. benchmark=False reuses the stores at data.*_store (experiments on one
    benchmark); deterministic=False skips that model and its baseline."""
    from hpcds.config.load import save_resolved
    from hpcds.data.benchmark import generate_benchmark
    from hpcds.train import train

    out = Path(out)
    save_resolved(cfg, out, name="demo.config.yaml")
    times: dict[str, float] = {}

    if benchmark:
        t = _stage("benchmark: LR, HR truth and forcings stores")
        generate_benchmark(cfg, overwrite=True, progress=progress)
        times["benchmark"] = time.perf_counter() - t

    diff = copy.deepcopy(cfg)
    diff.diffusion.deterministic = False
    diff.training.run_dir = str(out / "train_diffusion")
    det = copy.deepcopy(cfg)
    det.diffusion.deterministic = True
    det.training.run_dir = str(out / "train_deterministic")
    if cfg.evaluation.baseline_steps is not None:
        det.training.steps = int(cfg.evaluation.baseline_steps)
    t = _stage(f"train the diffusion model ({cfg.training.steps} steps)")
    s_diff = train(diff, progress=progress)
    s_det = None
    if deterministic:
        _stage(f"train the deterministic model ({det.training.steps} steps)")
        s_det = train(det, progress=progress)
    times["train"] = time.perf_counter() - t

    held_out = held_out_config(cfg)
    t = _stage(f"sample {cfg.sampling.members} members for each of the "
               f"{cfg.training.val_dates} held-out dates")
    ensemble = _sample_held_out(diff, held_out, s_diff["checkpoint"], out / "ensemble.zarr",
                                progress)
    times["sample"] = time.perf_counter() - t

    t = _stage("evaluate against truth, interpolation, deterministic and oracle")
    result, index = _evaluate_and_report(held_out, ensemble, out / "eval",
                                         s_det and s_det["checkpoint"], progress)
    times["evaluate"] = time.perf_counter() - t
    return {"result": result, "report": index, "times": times,
            "train": {"diffusion": s_diff, "deterministic": s_det}}


def finetune_config(cfg: HpcdsConfig, out: str | Path, diffusion_checkpoint: str | Path,
                    steps: int = FINETUNE_STEPS) -> HpcdsConfig:
    """The diffusion config of `cfg` fine-tuned in the high-noise regime: σ uniform on the
    Karras ramp up to FINETUNE_SIGMA_MAX, `steps` steps from the weights (and EMA) of
    `diffusion_checkpoint` with a fresh optimizer and schedule (training.init_from), into
    out/train_finetune, its EMA decay at most FINETUNE_EMA_DECAY; every other setting (lr,
    warm-up, batch, seed, sampling.*) is cfg's."""
    ft = copy.deepcopy(cfg)
    ft.diffusion.deterministic = False
    ft.diffusion.regime = SigmaRegime.karras_uniform
    ft.diffusion.sigma_max = FINETUNE_SIGMA_MAX
    ft.training.steps = int(steps)
    ft.training.ema_decay = min(float(cfg.training.ema_decay), FINETUNE_EMA_DECAY)
    ft.training.init_from = str(diffusion_checkpoint)
    ft.training.run_dir = str(Path(out) / "train_finetune")
    return ft


def _val_losses(run_dir: Path) -> tuple[float | None, float | None]:
    """The EMA validation loss of a fine-tuning run at its first (the source's weights) and
    last validation: both under the fine-tuning σ distribution."""
    from hpcds.train.metrics import read_metrics

    path = run_dir / "metrics.jsonl"
    val = read_metrics(path, "val") if path.is_file() else []
    if not val:
        return None, None
    first, last = val[0], val[-1]
    return first.get("ema_loss"), last.get("ema_loss")


def run_finetune(cfg: HpcdsConfig, out: str | Path, diffusion_checkpoint: str | Path,
                 progress: bool = True, *, steps: int = FINETUNE_STEPS,
                 before: str | Path | None = None,
                 deterministic_checkpoint: str | Path | None = None) -> dict:
    """The high-noise fine-tuning stage, after `run_pipeline` into the same `out`: train
    `finetune_config(cfg, out, diffusion_checkpoint, steps)`, sample the held-out dates into
    out/ensemble_finetuned.zarr, and evaluate it with the diffusion model's ensemble `before`
    (default out/ensemble.zarr) as the sources "before" and "after" (+ the oracle,
    interpolation and, given its checkpoint, the deterministic model) into out/eval_finetune.
    Returns {"result", "report", "times", "train": the fine-tuning summary, "val_loss":
    (before, after) EMA validation loss under the fine-tuning σ distribution}."""
    from hpcds.errors import UserError
    from hpcds.train import train

    if not diffusion_checkpoint or not Path(diffusion_checkpoint).is_file():
        raise UserError(f"no diffusion checkpoint to fine-tune from ({diffusion_checkpoint}): "
                        "train the diffusion model first (training.steps >= 1)")
    out = Path(out)
    before = Path(before) if before is not None else out / "ensemble.zarr"
    times: dict[str, float] = {}
    ft = finetune_config(cfg, out, diffusion_checkpoint, steps)
    t = _stage(f"fine-tune the diffusion model at high noise ({ft.training.steps} steps, "
               f"σ uniform on the Karras ramp to {ft.diffusion.sigma_max:g})")
    s_ft = train(ft, progress=progress)
    times["finetune"] = time.perf_counter() - t

    held_out = held_out_config(cfg)
    # Sampled with the demo's sampling.* (solver, steps, members, seed: the same noise as the
    # "before" ensemble, member for member) and the fine-tuned model's own training σ range:
    # the schedule starts from σ_max = 1e5, as the σ schedule comes from the sampling config's
    # diffusion.* (hpcds/ensemble/model.py) and KarrasUniformSigma trains σ uniformly along
    # this very Karras ramp; "before" starts from its own training σ_max (80). With the same step
    # count, fewer of the steps fall below σ = 80 (about 12 of 40 at ρ = 7).
    t = _stage(f"sample the fine-tuned model: {cfg.sampling.members} members for each of the "
               f"{cfg.training.val_dates} held-out dates")
    after = _sample_held_out(ft, held_out, s_ft["checkpoint"], out / "ensemble_finetuned.zarr",
                             progress)
    times["finetune_sample"] = time.perf_counter() - t

    t = _stage("evaluate before and after fine-tuning")
    result, index = _evaluate_and_report(held_out, {"before": str(before), "after": after},
                                         out / "eval_finetune", deterministic_checkpoint,
                                         progress)
    times["finetune_evaluate"] = time.perf_counter() - t
    return {"result": result, "report": index, "times": times, "train": s_ft,
            "val_loss": _val_losses(Path(ft.training.run_dir))}
