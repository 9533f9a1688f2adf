"""The optimizer step, two ways with one interface: plain torch (AdamW) or DeepSpeed (ZeRO).

    stepper = make_stepper(net, optimizer, cfg, tp)      # parallel.use_deepspeed picks
    for micro in micro_batches:
        stepper.backward(loss, n_micro)                   # loss of one micro-batch
    grad_norm = stepper.step()                            # reduce, clip, update → norm tensor
                                                          # (on the device: no host sync)

Plain: backward of loss / n_micro; then `TrainParallel.reduce_grads` (Σ_world / D), clipping
(`training.grad_clip`; 0 = measure only) and `optimizer.step()`.

DeepSpeed (`parallel.use_deepspeed`): `deepspeed.initialize` with our AdamW (DeepSpeed wraps
it: ZeRO stage `parallel.zero_stage` partitions its state — stage 1 — and the gradients —
stage 2 — over the data-parallel ranks), `gradient_accumulation_steps` = n_micro (DeepSpeed
divides the loss itself), `gradient_clipping` = grad_clip, bf16 on CUDA. Its data-parallel
group is the whole world, so the loss is multiplied by P (see hpcds/train/parallel.py for
why that gives exactly the single-process gradient). The learning-rate schedule keeps
writing the base optimizer's param_groups, which DeepSpeed's optimizer shares. With bf16 the
module's parameters become bf16 compute copies and the float32 master weights live in
DeepSpeed's optimizer, partitioned over the ranks: the EMA and the checkpoint's `model` are
taken from those masters (hpcds/train/master.py), never from the bf16 copies. On CPU,
DeepSpeed runs with gloo (its first initialisation JIT-builds a small extension, ~45 s,
cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from hpcds.checkpoint import step_name
from hpcds.errors import ConfigError
from hpcds.observe import trace_range
from hpcds.train.parallel import TrainParallel

log = logging.getLogger(__name__)


class PlainStepper:
    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 tp: TrainParallel, grad_clip: float):
        self.net, self.optimizer, self.tp = net, optimizer, tp
        self.clip = grad_clip if grad_clip > 0 else math.inf

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, n_micro: int) -> None:
        with trace_range("backward"):
            (loss / n_micro).backward()

    def step(self) -> torch.Tensor:
        self.tp.reduce_grads(self.net)
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
        self.optimizer.step()
        return norm

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict, run_dir: Path, step: int) -> None:
        self.optimizer.load_state_dict(state)


class DeepSpeedStepper:
    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 tp: TrainParallel, cfg, n_micro: int, device: torch.device):
        import deepspeed  # heavy import (and a JIT build on first use): only on this path

        t, par = cfg.training, cfg.parallel
        if par.zero_stage > 2:
            raise ConfigError(f"parallel.zero_stage={par.zero_stage}: the trainer supports "
                              "ZeRO stages 0-2 (stage 3 partitions the weights, which the "
                              "sharded model keeps replicated); use 0, 1 or 2")
        ds_config = {
            "train_micro_batch_size_per_gpu": int(t.batch_size),
            "gradient_accumulation_steps": int(n_micro),
            "gradient_clipping": float(t.grad_clip),
            "zero_optimization": {"stage": int(par.zero_stage)},
            "bf16": {"enabled": device.type == "cuda"},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=net, optimizer=optimizer, config=ds_config, dist_init_required=False)
        self.net, self.tp, self.device = net, tp, device
        self.P = tp.model_parallel

    def zero_grad(self) -> None:
        pass  # DeepSpeed zeroes gradients itself at each accumulation boundary

    def backward(self, loss: torch.Tensor, n_micro: int) -> None:
        with trace_range("backward"):
            self.engine.backward(loss * self.P)
        with trace_range("optimizer"):  # DeepSpeed's update runs here, not in step()
            self.engine.step()  # applies the update only at the accumulation boundary

    def step(self) -> torch.Tensor:
        """The gradient norm DeepSpeed measured at this step's boundary, as a tensor on the
        device: no host sync here (the trainer reads it only on log steps)."""
        norm = self.engine.get_global_grad_norm()
        if torch.is_tensor(norm):  # ZeRO 1/2 and the bf16 optimizer: a 0-d device tensor
            return norm.detach()
        # None (not measured: stage 0 in float32) or a Python float DeepSpeed already holds
        # (inf after an overflow): a fill on the device, no host↔device copy
        return torch.full((), math.nan if norm is None else norm, dtype=torch.float32,
                          device=self.device)

    def optimizer_state(self) -> dict:
        return {}  # partitioned: saved with DeepSpeed's own checkpoint (save_deepspeed)

    def load_optimizer_state(self, state: dict, run_dir: Path, step: int) -> None:
        """Every rank's partition of the optimizer state saved at `step` (save_deepspeed)."""
        tag, ds_dir = _tag(step), run_dir / "deepspeed"
        loaded, _ = self.engine.load_checkpoint(str(ds_dir), tag=tag, load_module_strict=True,
                                                load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
        if loaded is None:
            raise ConfigError(f"no DeepSpeed optimizer state {ds_dir}/{tag} for step {step}: "
                              "resume with the same parallel.use_deepspeed, or start a new "
                              "run_dir")

    def save_deepspeed(self, run_dir: Path, step: int) -> None:
        """Collective: every rank writes its optimizer partition under
        run_dir/deepspeed/step-XXXXXXX (the step's checkpoint name)."""
        self.engine.save_checkpoint(str(run_dir / "deepspeed"), tag=_tag(step),
                                    save_latest=False)


def _tag(step: int) -> str:
    return step_name(step).removesuffix(".pt")


def make_stepper(net, optimizer, cfg, tp: TrainParallel, device: torch.device):
    if cfg.parallel.use_deepspeed:
        return DeepSpeedStepper(net, optimizer, tp, cfg, cfg.training.grad_accumulation,
                                device)
    if cfg.parallel.zero_stage:
        log.warning("parallel.zero_stage=%d is ignored without parallel.use_deepspeed",
                    cfg.parallel.zero_stage)
    return PlainStepper(net, optimizer, tp, cfg.training.grad_clip)
