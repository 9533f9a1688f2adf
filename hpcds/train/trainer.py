"""The training loop: `train(cfg) -> summary`.

One optimizer step = `grad_accumulation` micro-batches of `batch_size` dates, each
    σ ~ p_train(σ), n ~ N(0, σ²):  loss = λ(σ)·‖D(y + n; σ, cond) − y‖²_w   (EDMLoss)
(or the regression MSE when diffusion.deterministic), backward of loss / grad_accumulation,
then gradient clipping (grad_clip; 0 = measure the norm only), AdamW, the warm-up + cosine
rate, and the EMA update. bf16 autocast on CUDA, float32 on CPU. The EMA and the checkpoint's
`model` are float32 master weights whatever the compute dtype (DeepSpeed bf16 included).

Randomness, all from run.seed: model init (torch's global generator), σ and noise (a
generator on the device, seed+1), the sample order (seed+2), validation draws (seed+7919,
re-seeded each time). All of it is checkpointed, so a resumed run continues the SAME loss
sequence as an uninterrupted one.

Starting (resume.py): with training.resume and a run_dir/latest.pt, the run resumes from it
(optimizer, schedule, EMA, data position, RNG: everything); otherwise training.init_from (if
set) supplies the weights and EMA of another run, with a fresh optimizer, schedule and step
count (fine-tuning, e.g. diffusion.regime=karras_uniform diffusion.sigma_max=1e5); otherwise
the seeded initialisation. A resumable latest.pt wins over init_from, so an interrupted
fine-tune continues where it stopped. A resume must keep the checkpoint's model (same shapes)
and everything else that decides what is learned; it may change training.steps, intervals and
paths (`hpcds.checkpoint.format.RESUMABLE_KEYS`, `check_resumable`).

No host synchronisation inside a step: losses and gradient norms accumulate as tensors and
are read (`.item()`) only on log steps (every `log_every`). Outputs in training.run_dir:
config.yaml and statistics.json (once a resumed checkpoint has passed its checks: a refused
resume changes nothing), metrics.jsonl, step-XXXXXXX.pt and latest.pt
(written by global rank 0; with DeepSpeed also deepspeed/step-XXXXXXX/, its partitioned
optimizer state, written by every rank).

Parallel runs (launched by torchrun, srun or mpirun; `parallel.*` in the config): the model
is sharded over `model_parallel` ranks and replicated over the others, and the result equals
one process with batch_size × replicas — see hpcds/train/parallel.py. The unit noise is
counter-based, keyed by (seed, sample counter, global HR node), so it is the same for every
layout; σ and the sample order come from generators seeded alike on all ranks.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hpcds.checkpoint import LATEST, save_checkpoint, step_name
from hpcds.config.load import save_resolved, to_yaml
from hpcds.config.schema import HpcdsConfig, TrainingConfig
from hpcds.data.paired import PairedDataset
from hpcds.diffusion.precond import EDMPrecond
from hpcds.errors import UserError
from hpcds.models.shard_graphs import GraphParts
from hpcds.train import rng
from hpcds.train.components import autocast, build_components, pick_device
from hpcds.train.data import (SampleOrder, TrainSamples, collate, prepare_normalisation,
                              save_normalisation, split_dates, to_device)
from hpcds.observe import CaptureWindow, trace_range
from hpcds.train.ema import EMA
from hpcds.train.engine import make_stepper
from hpcds.train.master import master_state_dict
from hpcds.train.metrics import MetricsLog
from hpcds.train.noise_spectrum import training_noise
from hpcds.train.parallel import TrainDraws, TrainParallel
from hpcds.train.resume import restore_start
from hpcds.train.schedule import WarmupCosine
from hpcds.train.validation import VAL_SEED_OFFSET, fixed_draw_loss

log = logging.getLogger(__name__)

NOISE_SEED_OFFSET, ORDER_SEED_OFFSET = 1, 2


def make_optimizer(net: torch.nn.Module, t: TrainingConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on biases, norms or embeddings' 1-D gains)."""
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=t.lr)


class _NoMetrics:
    """Metrics of ranks other than global rank 0: nothing is written."""

    def truncate_after(self, step: int) -> None:
        pass

    def write(self, record: dict) -> None:
        pass


def accumulate_gradients(denoiser, loss_fn, micro_batches, generator, device, *,
                         backward=None, nodes=None, reduce=None) -> torch.Tensor:
    """Forward + backward of each micro-batch (dict of target/cond/forcings, optionally the
    draws sigma/noise); returns the mean loss (a tensor). `backward(loss, n_micro)` (a
    stepper's; default: backward of loss / n_micro); `nodes`/`reduce`: a shard's rows of the
    global loss and the sum over the model-parallel group (hpcds/train/parallel.py). NVTX:
    "loss" then "backward" per micro-batch (hpcds/observe.py)."""
    total = torch.zeros((), device=device)
    n = len(micro_batches)
    for batch in micro_batches:
        draws = {k: batch[k] for k in ("sigma", "noise") if k in batch}
        if nodes is not None:
            draws["nodes"] = nodes
        with trace_range("loss"):  # the forward: σ/noise, EDMPrecond, the network, the MSE
            with autocast(device):
                out = loss_fn(denoiser, batch["target"], batch["cond"], batch["forcings"],
                              generator=generator, **draws)
            loss = out.loss if reduce is None else reduce(out.per_sample).mean()
        if backward is None:
            with trace_range("backward"):
                (loss / n).backward()
        else:
            backward(loss, n)  # the steppers open "backward" (and DeepSpeed "optimizer")
        total += loss.detach()
    return total / n


def log_progress_line(step: int, total: int, loss: float, steps_per_s: float) -> None:
    """The progress bar's content as one stderr line per log interval, where no terminal
    shows the bar (Slurm output, a redirected log)."""
    eta = int(round((total - step) / max(steps_per_s, 1e-9)))
    print(f"train: step {step}/{total}  loss {loss:.4g}  {steps_per_s:.2f} steps/s  "
          f"ETA {eta // 60}m{eta % 60:02d}s", file=sys.stderr, flush=True)


def train(cfg: HpcdsConfig, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or resume) the run in cfg.training.run_dir; stop at `training.steps` or, if
    given, at `stop_at` (a checkpoint is written either way). Returns a summary dict."""
    t = cfg.training
    run_dir = Path(t.run_dir)
    tp = TrainParallel.setup(cfg)
    config_yaml = to_yaml(cfg)
    device = pick_device()
    seed = int(cfg.run.seed)
    P, D, B = tp.model_parallel, tp.data_parallel, int(t.batch_size)

    ds = PairedDataset.from_config(cfg, hr_cells=tp.hr_range)
    split = split_dates(ds, t.val_dates)
    # written to run_dir only once a resumed checkpoint is known to fit (below)
    norm, norm_source = prepare_normalisation(cfg, split, run_dir,
                                              merge=tp.merge_stats if P > 1 else None,
                                              write=False, barrier=tp.barrier)
    samples = TrainSamples(split.train)
    val_samples = TrainSamples(split.val) if split.val is not None else None
    first = samples[0]
    n_vars, n_forcings = first["target"].shape[1], first["forcings"].shape[1]
    del first  # only its shapes: an O2560 shard's sample is ~0.5 GB at P = 4

    rng.seed_all(seed)
    # P > 1: only this rank's graphs (tp.shard assigns the same default ranges)
    parts = GraphParts.for_rank(tp.state.ctx, tp.n_hr)
    comps = build_components(cfg, ds.hr_grid, n_vars, n_forcings, device,
                             parts=parts)
    net, denoiser, loss_fn = comps.net, comps.denoiser, comps.loss
    shard = tp.shard(net)  # P = 1: unchanged
    optimizer = make_optimizer(net, t)
    scheduler = WarmupCosine(optimizer, t)
    stepper = make_stepper(net, optimizer, cfg, tp, device)
    ema = EMA(net, t.ema_decay)
    noise_gen = torch.Generator(device).manual_seed(seed + NOISE_SEED_OFFSET)
    noise_shape, noise_spectrum = training_noise(cfg, split, norm)  # None: white noise
    draws = TrainDraws(seed + NOISE_SEED_OFFSET, tp.node_index, n_vars, device, noise_shape)
    val_draws = TrainDraws(seed + VAL_SEED_OFFSET, tp.node_index, n_vars, device, noise_shape)
    sigma_sampler = getattr(loss_fn, "sigma_sampler", None)  # None: regression
    order = SampleOrder(len(samples), seed + ORDER_SEED_OFFSET)
    generators = {"noise": noise_gen}
    sharded = dict(nodes=tp.hr_slice, reduce=tp.reduce_loss) if P > 1 else {}
    if tp.world_size > 1:
        log.info("rank %d: %s; HR cells %s; halo rows %s", tp.state.env.rank,
                 tp.state.layout.describe(), tp.hr_range, shard.halo_rows())

    step, resumed_from, ema = restore_start(t, run_dir, config_yaml, net=net, ema=ema,
                                            stepper=stepper, scheduler=scheduler, order=order,
                                            generators=generators)
    if resumed_from is not None and resumed_from >= t.steps:
        log.warning("%s is at step %d, training.steps is %d: nothing to train, the run's model "
                    "is used as it is (a fresh training.run_dir, or `hpcds demo --out`, trains "
                    "anew)", run_dir / LATEST, resumed_from, t.steps)
    latest = run_dir / LATEST
    if tp.is_main:  # only now: a refused resume must leave the run's files as they were
        save_resolved(cfg, run_dir)
        save_normalisation(split, run_dir)
    metrics = MetricsLog(run_dir / "metrics.jsonl") if tp.is_main else _NoMetrics()
    metrics.truncate_after(step)

    def validate(at: int) -> dict | None:
        if val_samples is None:
            return None
        common = dict(seed=seed + VAL_SEED_OFFSET, batch_size=t.batch_size, device=device,
                      noise=val_draws, **sharded)
        raw = fixed_draw_loss(denoiser, loss_fn, val_samples, **common)
        ema.sync()  # collective under ZeRO: each rank updated its slice of the average
        smooth = raw  # before the first update the EMA is the model
        if ema.updates:
            ema_denoiser = EDMPrecond(ema.module, denoiser.sigma_data, denoiser.deterministic)
            smooth = fixed_draw_loss(ema_denoiser, loss_fn, val_samples, **common)
        record = {"kind": "val", "step": at, **raw,
                  **{f"ema_{k}": v for k, v in smooth.items()}}
        metrics.write(record)
        return record

    def checkpoint(at: int, train_loss: float | None) -> Path:
        if hasattr(stepper, "save_deepspeed"):  # collective: every rank's partition
            stepper.save_deepspeed(run_dir, at)
        # collective under ZeRO (float32 masters and EMA partitioned over the ranks): every
        # rank assembles, rank 0 writes. float32 also when the module computes in bf16
        model_state = master_state_dict(net)
        ema.sync()
        path = run_dir / step_name(at)
        if tp.is_main:
            path = save_checkpoint(run_dir, {
                "step": at, "model": model_state, "ema": ema.state_dict(),
                "optimizer": stepper.optimizer_state(), "scheduler": scheduler.state_dict(),
                "data": order.state_dict(), "rng": rng.capture(generators),
                "config": config_yaml, "normalisation": norm.to_dict(),
                "metrics": {"train_loss": train_loss}, "layout": tp.state.layout.describe(),
                "noise_spectrum": noise_spectrum.to_dict() if noise_spectrum else None})
        tp.barrier()  # nobody reads latest.pt before it is complete
        return path

    end = t.steps if stop_at is None else min(t.steps, int(stop_at))
    start_step = step
    samples_per_step = t.batch_size * t.grad_accumulation
    last_val = validate(0) if step == 0 and t.val_every > 0 and end > 0 else None
    last_loss, saved = None, None
    loss_acc = torch.zeros((), device=device)
    norm_acc = torch.zeros((), device=device)
    n_acc, excluded, train_seconds = 0, 0.0, 0.0
    mark = time.perf_counter()
    net.train()
    bar = tqdm(total=t.steps, initial=step, desc="train", unit="step", leave=False,
               disable=None if progress and tp.is_main else True, dynamic_ncols=True)
    capture = CaptureWindow(cfg.profile, device)
    rows = tp.replica_rows(B)
    n_micro = int(t.grad_accumulation)
    try:
        while step < end:
            capture.before_step(step)
            with trace_range("data"):
                micro = []
                for m in range(n_micro):
                    # one global batch of B·D samples per micro-step; this replica's rows
                    batch = to_device(collate([samples[i] for i in order.take(B * D)[rows]]),
                                      device)
                    if sigma_sampler is not None:
                        batch["sigma"] = sigma_sampler.sample(B * D, generator=noise_gen,
                                                              device=device)[rows]
                        counter = (step * n_micro + m) * B * D + np.arange(B * D)[rows]
                        batch["noise"] = draws.noise(counter)
                    micro.append(batch)
            stepper.zero_grad()
            loss = accumulate_gradients(denoiser, loss_fn, micro, noise_gen, device,
                                        backward=stepper.backward, **sharded)
            lr = scheduler.current()
            with trace_range("optimizer"):
                grad_norm = stepper.step()
                scheduler.step()
                ema.update(net)
            step += 1
            loss_acc += loss
            norm_acc += grad_norm.to(device)
            n_acc += 1
            bar.update(1)

            if step % t.log_every == 0 or step == end:
                last_loss = loss_acc.item() / n_acc  # the one host sync per log interval
                now = time.perf_counter()
                seconds = max(now - mark - excluded, 1e-9)
                train_seconds += seconds
                record = {"kind": "train", "step": step, "loss": last_loss, "lr": lr,
                          "grad_norm": norm_acc.item() / n_acc,
                          "steps_per_s": n_acc / seconds,
                          "samples_per_s": n_acc * samples_per_step / seconds}
                metrics.write(record)
                bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
                if bar.disable and progress and tp.is_main:  # no terminal (srun, a log file)
                    log_progress_line(step, t.steps, last_loss, record["steps_per_s"])
                if not math.isfinite(last_loss):
                    raise UserError(f"training diverged at step {step} (loss {last_loss}): "
                                    "lower training.lr or raise training.warmup_steps; "
                                    f"checkpoints are in {run_dir}")
                loss_acc.zero_()
                norm_acc.zero_()
                n_acc, excluded, mark = 0, 0.0, now

            paused = time.perf_counter()
            if t.val_every > 0 and step % t.val_every == 0:
                last_val = validate(step)
            if t.checkpoint_every > 0 and step % t.checkpoint_every == 0 or step == end:
                saved = checkpoint(step, last_loss)
            excluded += time.perf_counter() - paused
    finally:
        capture.close()
        bar.close()

    if val_samples is not None and (last_val is None or last_val["step"] != step):
        last_val = validate(step)
    steps_run = step - start_step
    return {
        "run_dir": str(run_dir), "step": step, "start_step": start_step,
        "resumed_from": resumed_from, "steps_run": steps_run, "train_loss": last_loss,
        "val_loss": last_val["loss"] if last_val else None,
        "val_ema_loss": last_val["ema_loss"] if last_val else None,
        "steps_per_s": steps_run / train_seconds if train_seconds else None,
        "samples_per_s": steps_run * samples_per_step / train_seconds if train_seconds
        else None,
        "seconds_per_step": train_seconds / steps_run if steps_run else None,
        "checkpoint": str(saved) if saved else (str(latest) if latest.is_file() else None),
        "normalisation": norm_source, "device": str(device),
    }
