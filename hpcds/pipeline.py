"""The end-to-end pipeline behind `hpcds demo` and `perf/quality.py`:

    benchmark → train the diffusion model and the deterministic (conditional-mean) model
              → sample an ensemble for the held-out dates → evaluate against truth,
                interpolation, the deterministic model and the oracle → report
                (scores.json, plots, index.html)

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

from hpcds.config.schema import HpcdsConfig


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


def run_pipeline(cfg: HpcdsConfig, out: str | Path, progress: bool = True, *,
                 benchmark: bool = True, deterministic: bool = True) -> dict:
    """Run every stage into `out`; returns {"result": evaluate()'s dict (scores, summary),
    "report": index.html path, "times": seconds per stage, "train": the training
    summaries}. benchmark=False reuses the stores at data.*_store (experiments on one
    benchmark); deterministic=False skips that model and its baseline."""
    from hpcds.config.load import save_resolved
    from hpcds.data.benchmark import generate_benchmark
    from hpcds.ensemble.generate import generate
    from hpcds.evaluate.report import write_report
    from hpcds.evaluate.run import evaluate
    from hpcds.grids import make_grid
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
    t = _stage(f"train the diffusion model ({cfg.training.steps} steps)")
    s_diff = train(diff, progress=progress)
    s_det = None
    if deterministic:
        _stage(f"train the deterministic model ({cfg.training.steps} steps)")
        s_det = train(det, progress=progress)
    times["train"] = time.perf_counter() - t

    held_out = held_out_config(cfg)
    diff.data.start_date = held_out.data.start_date
    t = _stage(f"sample {cfg.sampling.members} members for each of the "
               f"{cfg.training.val_dates} held-out dates")
    diff.sampling.output = str(out / "ensemble.zarr")
    generate(diff, checkpoint=s_diff["checkpoint"], overwrite=True, progress=progress)
    times["sample"] = time.perf_counter() - t

    t = _stage("evaluate against truth, interpolation, deterministic and oracle")
    result = evaluate(held_out, diff.sampling.output, out_dir=out / "eval",
                      deterministic_checkpoint=s_det and s_det["checkpoint"],
                      progress=progress)
    index = write_report(result, out / "eval", make_grid(cfg.grid.hr))
    times["evaluate"] = time.perf_counter() - t
    return {"result": result, "report": index, "times": times,
            "train": {"diffusion": s_diff, "deterministic": s_det}}
