"""Where a run starts: resumed from its own latest.pt, initialised from another run's
weights (`training.init_from`), or from the seeded initialisation.

  resume     with training.resume and a run_dir/latest.pt: everything comes back (weights,
             EMA, optimizer, schedule, data position, RNG), so the resumed run continues the
             same loss sequence as an uninterrupted one. It must keep the checkpoint's model
             (same shapes) and everything else that decides what is learned
             (`hpcds.checkpoint.format.check_resumable`).
  init_from  the weights and EMA of another run with a fresh optimizer, schedule and step
             count (fine-tuning). A resumable latest.pt wins over init_from, so an
             interrupted fine-tune continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch

from hpcds.checkpoint import LATEST, check_compatible, check_resumable, load_checkpoint
from hpcds.config.schema import TrainingConfig
from hpcds.train import rng
from hpcds.train.ema import EMA
from hpcds.train.master import load_master_state

log = logging.getLogger(__name__)


class Start(NamedTuple):
    step: int  # the step the loop starts at
    resumed_from: int | None  # the resumed checkpoint's step; None: not a resume
    ema: EMA  # the EMA to continue (init_from without EMA weights: a fresh one)


def restore_start(t: TrainingConfig, run_dir: Path, config_yaml: str, *, net: torch.nn.Module,
                  ema: EMA, stepper, scheduler, order, generators: dict) -> Start:
    """Load the state the run starts from into net, ema, stepper, scheduler, order and
    generators (in place); a fresh run leaves them as they are."""
    latest = run_dir / LATEST
    if t.resume and latest.is_file():
        state = load_checkpoint(latest)  # on the CPU: RNG states must stay there
        for weights in (state["model"], state["ema"]["module"]):
            check_compatible(net, weights, state["config"], config_yaml, latest)
        check_resumable(state["config"], config_yaml, latest)
        load_master_state(net, state["model"])
        ema.load_state_dict(state["ema"])
        stepper.load_optimizer_state(state["optimizer"], run_dir, int(state["step"]))
        scheduler.load_state_dict(state["scheduler"])
        order.load_state_dict(state["data"])
        rng.restore(state["rng"], generators)
        step = int(state["step"])
        log.info("resumed from %s at step %d", latest, step)
        return Start(step, step, ema)
    if t.init_from:
        state = load_checkpoint(t.init_from, resume=False)
        check_compatible(net, state["model"], state["config"], config_yaml, t.init_from)
        load_master_state(net, state["model"])  # DeepSpeed's masters too, not just the module
        if "ema" in state:
            check_compatible(net, state["ema"]["module"], state["config"], config_yaml,
                             t.init_from)
            ema.load_state_dict(state["ema"])
        else:  # the average starts from the loaded weights, not the seeded ones
            ema = EMA(net, t.ema_decay)
        log.info("initialised from %s (step %s)", t.init_from, state["step"])
    return Start(0, None, ema)
