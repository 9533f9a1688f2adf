"""The trainer on P × D ranks: what changes, and why the result equals one process.

    tp = TrainParallel.setup(cfg)                 # groups from cfg.parallel and the launcher
    ds = PairedDataset.from_config(cfg, hr_cells=tp.hr_range)    # only this rank's HR cells
    stats = tp.merge_stats(ds.residual_statistics())             # float64, whole grid
    shard = tp.shard(net)                          # parallelize_model: halos, local graphs
    draws = TrainDraws(seed, tp.node_index, V)     # noise keyed by GLOBAL node and sample
    rows = tp.replica_rows(B)                      # this replica's part of the global batch
    partial = loss_fn(..., nodes=tp.hr_slice) → tp.reduce_loss(per_sample)   # Σ over shards
    backward → tp.reduce_grads(net)                # plain torch path (DeepSpeed: see below)

World = P model-parallel ranks × D replicas (`hpcds.distributed.ParallelLayout`).
  * Model parallel: rank p owns the HR cells `shard_ranges(n_hr, P)[p]` (and the matching
    hidden nodes, see hpcds/models/parallelize.py). Its per-sample loss is the partial sum
    Σ_{n ∈ shard} a_n·w_v·e² / (N·V) of the global weighted mean (EDMLoss with `nodes`), so
    the sum over the group is the single-process loss; the reduction is in float32.
  * Data parallel: each step draws ONE global batch of B·D samples (the same indices and σ on
    every rank: same seed, same generator calls); replica d trains on rows [d·B, (d+1)·B).
    The mean of the replicas' gradients is the gradient of the global batch's mean loss, so
    D replicas of batch B equal one process with batch B·D.
  * Noise: unit noise of global sample s at global node n, variable v is
    `batch_noise(seed, s, 0, n, v)` (counter-based, hpcds/diffusion/noise.py), so it does not
    depend on P, D or the shard a node lands on.
  * Gradients (plain torch path): each rank holds a partial gradient of the replicated weights
    (its shard's share of its replica's loss); the single-process gradient of the global batch
    is Σ over all P·D ranks / D — one all-reduce over the world.
  * DeepSpeed: its data-parallel group is the whole world (no model-parallel unit is passed),
    and it averages gradients over P·D ranks; backpropagating P × loss makes that average
    Σ / D again (the P cancels), with ZeRO partitioning the optimizer state over all P·D ranks.
Weights, EMA and optimizer updates are then identical on every rank; global rank 0 writes
checkpoints, metrics and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpcds.data.stats import RunningStats
from hpcds.diffusion.noise import batch_noise
from hpcds.distributed import ParallelState, all_reduce_sum, setup_parallel
from hpcds.distributed.verbs import sum_grads
from hpcds.distributed import primitives as prim
from hpcds.errors import ConfigError
from hpcds.grids import grid_point_count, shard_ranges


@dataclass(frozen=True, eq=False)
class TrainParallel:
    state: ParallelState
    n_hr: int  # HR cells of the whole grid
    hr_range: tuple[int, int]  # this rank's HR cells [start, stop)

    @classmethod
    def setup(cls, cfg) -> "TrainParallel":
        """Initialise torch.distributed from the launcher (nothing for one process), validate
        the layout against cfg.parallel, and pick this rank's HR cells."""
        state = setup_parallel(cfg.parallel)
        n_hr = grid_point_count(cfg.grid.hr)
        P = state.layout.model_parallel
        if n_hr < P:
            raise ConfigError(f"parallel.model_parallel={P} exceeds the {n_hr} HR cells of "
                              f"{cfg.grid.hr.name}: lower model_parallel")
        return cls(state, n_hr, shard_ranges(n_hr, P)[state.model_parallel_rank])

    # ------------------------------------------------------------------ who am I
    @property
    def model_parallel(self) -> int:
        return self.state.layout.model_parallel

    @property
    def data_parallel(self) -> int:
        return self.state.layout.data_parallel

    @property
    def world_size(self) -> int:
        return self.state.layout.world_size

    @property
    def is_main(self) -> bool:
        """Global rank 0: writes checkpoints, metrics, statistics and the progress bar."""
        return self.state.env.rank == 0

    @property
    def hr_slice(self) -> slice:
        return slice(*self.hr_range)

    @property
    def node_index(self) -> np.ndarray:
        """(n_local,) int64 global SFC index of each local HR row."""
        return np.arange(*self.hr_range, dtype=np.int64)

    def replica_rows(self, batch_size: int) -> slice:
        """This replica's rows of a global batch of batch_size · D samples."""
        d = self.state.data_parallel_rank
        return slice(d * batch_size, (d + 1) * batch_size)

    # ------------------------------------------------------------------ model and reductions
    def shard(self, net: torch.nn.Module):
        """Shard `net` (built with the FULL graphs) over the model-parallel group, in place."""
        from hpcds.models.parallelize import parallelize_model
        return parallelize_model(net, self.state.ctx, n_hr=self.n_hr)

    def merge_stats(self, stats: RunningStats) -> RunningStats:
        """The whole grid's statistics from every shard's (float64, merged in shard order,
        so every rank gets the same numbers)."""
        parts = prim.all_gather_object(stats, self.state.model_parallel_group)
        if len(parts) == 1:
            return stats
        merged = RunningStats(stats.variables)
        for part in parts:
            merged.merge(part)
        return merged

    def reduce_loss(self, per_sample: torch.Tensor) -> torch.Tensor:
        """(B,) shard partial losses → the whole grid's (float32; autograd: identity)."""
        return all_reduce_sum(per_sample.float(), self.state.ctx)

    @torch.no_grad()
    def reduce_grads(self, net: torch.nn.Module) -> None:
        """Plain torch path: grad ← Σ_world grad / D (see the module docstring)."""
        if self.world_size > 1:
            sum_grads(net, None, scale=1.0 / self.data_parallel)

    def barrier(self) -> None:
        prim.barrier(None)


class TrainDraws:
    """Unit noise of training samples keyed by (seed, global sample counter, global node):
    the same values whatever the sharding and the data-parallel split.

    noise(counters (B,) int64) → (B, n_local, V) float32 on `device`; coloured by `shape`
    (a `hpcds.diffusion.noise_shape.NoiseShape`, diffusion.noise=residual_spectrum) if given."""

    def __init__(self, seed: int, node_index: np.ndarray, n_vars: int,
                 device: torch.device | str = "cpu", shape=None):
        self.seed, self.node_index, self.n_vars = int(seed), node_index, int(n_vars)
        self.device = torch.device(device)
        self.draw = batch_noise if shape is None else shape.draw

    def noise(self, counters: np.ndarray) -> torch.Tensor:
        z = self.draw(self.seed, counters, 0, self.node_index, self.n_vars)
        return torch.from_numpy(z.astype(np.float32)).to(self.device)
