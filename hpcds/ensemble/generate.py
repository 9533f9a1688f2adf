"""Ensemble generation: LR states in, an ensemble of HR states out, written resumably.

    result = generate(cfg)                 # what `hpcds sample` runs
    result.samples_per_s                   # HR fields (date × member) per second

For each date (all the dataset's dates, or data.start_date … data.end_date) and each batch of
members (`sampling.members_per_batch`):

    x_T     = σ_0 · z(-1)                         z(step): noise keyed by (seed, date, member,
                                                  step, global HR node, variable) — noise.py
    x_0     = solver(D, x_T, σ_0 > … > σ_n = 0)   sampling.solver: heun (S_churn, S_min, S_max,
                                                  S_noise) or dpmpp_2m; schedule from
                                                  diffusion.make_schedule; float64 state, the
                                                  network in float32 under torch.no_grad()
    x_HR    = f⁻¹(x_0 · residual_std + residual_mean + f(interp(x_LR)))
                                                  f: the checkpoint's data.log_transform
                                                  (identity without one; data/transform.py);
                                                  max(·, 0) for data.nonnegative

with D the EMA-weighted `EDMPrecond` of the checkpoint (`model.py`), conditioned on
cond = (interp(x_LR) − input_mean) / input_std and the HR forcings of the date.

Members. With an LR store of K ensemble members, `sampling.members` = M HR members are drawn
for EACH LR member: output member k·M + m is HR member m of LR member k (the store's
`lr_member` coordinate says which). Batches are a fixed partition of the output members
(k·M + m in [j·B, (j+1)·B), B = members_per_batch; a batch may span LR members), so a rerun
recomputes a partly finished batch exactly as the first run would have.

Randomness. Every noise value is a pure function of (sampling.seed, date, LR member k, HR
member m, solver step, global node, variable) — counter-based (`hpcds.diffusion.noise`), with
stream seed = hash(seed, date) and member key = k·2³² + m. So the same config and checkpoint
give the same store; a member does not depend on which other members or dates are sampled, on
resumption, or on the sharding of the HR nodes. It does not depend on members_per_batch either,
up to float32 round-off: the batched GEMMs of the network (MKL / cuBLAS) round differently for
different batch sizes (~1e-7 relative per call), which the solver carries to ~1e-6 of the
residual's scale. With a fixed members_per_batch the output is bitwise reproducible.

Deterministic (regression) checkpoints (diffusion.deterministic in the checkpoint's config): one
forward pass per (date, LR member); the conditional mean is written to all M members of that LR
member, so the store has the same shape as a diffusion ensemble and evaluation code needs no
special case (its spread is zero).

Resumption. The output store (`output.py`) marks each (date, member) done after its data is
written; a rerun with the same config skips finished pairs. `on_write(t, members)` is called
after each batch's flags are set (tests use it to simulate a crash). `overwrite` over an
existing store samples into `<output>.replacing` (`replacement_path`) and renames that over the
output only once every member is written: a run stopped part-way leaves the old ensemble as it
was (and its partial replacement beside it, started afresh by the next --overwrite).

Parallel (`parallel=setup_parallel(cfg.parallel)`, every rank of a torchrun/srun/mpirun launch
calls generate; `hpcds.ensemble.parallel`): D ensemble groups × P model-parallel ranks. Each
rank reads only its HR cells (a chunk-aligned range) and the LR cells they need, runs its
shard of the network, draws the noise of its global nodes (so members equal the 1-process
ones to float32 round-off of the network), and writes its own (members, cells) region —
nothing is gathered. The groups share the not-yet-done batches round-robin; after a batch
the group barriers, then its shard 0 sets the flags, so a flag covers all P shards' cells.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hpcds import __version__
from hpcds.atomic import publish_dir
from hpcds.config.load import to_yaml
from hpcds.config.schema import HpcdsConfig, Schedule, Solver
from hpcds.data.cells import store_cells_for_grid
from hpcds.data.dates import iso
from hpcds.data.forcings import forcing_fields
from hpcds.data.paired import PairedDataset, require_finite
from hpcds.data.transform import check_domain, inverse
from hpcds.data.transform import forward as transformed
from hpcds.diffusion.noise import make_noise_fn
from hpcds.diffusion.samplers import sample, spectrum_min_steps
from hpcds.diffusion.schedules import make_schedule
from hpcds.distributed import ParallelState
from hpcds.ensemble.model import SamplingModel, load_sampling_model
from hpcds.ensemble.output import EnsembleLayout, EnsembleStore, replacement_path
from hpcds.ensemble.parallel import SamplingRanks, plan_shards
from hpcds.grids import grid_point_count

log = logging.getLogger(__name__)

MEMBER_KEY_SHIFT = 32  # noise member key = k << 32 | m


def date_seed(seed: int, date: np.datetime64) -> int:
    """The noise stream seed of one date: a 64-bit hash of (sampling.seed, date)."""
    digest = hashlib.blake2b(f"hpcds-sample:{int(seed)}:{iso(date)}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def member_keys(output_members: np.ndarray, members: int) -> np.ndarray:
    """Noise member keys (k << 32 | m) of output members k·members + m."""
    output_members = np.asarray(output_members, dtype=np.int64)
    k, m = np.divmod(output_members, members)
    return (k << MEMBER_KEY_SHIFT) | m


def member_batches(n_members: int, batch: int) -> list[np.ndarray]:
    """The fixed partition of output members into batches of `batch` (the last may be short)."""
    batch = max(1, int(batch))
    return [np.arange(lo, min(lo + batch, n_members), dtype=np.int64)
            for lo in range(0, n_members, batch)]


@dataclass
class GenerateResult:
    path: Path
    n_dates: int
    n_members: int
    written: int = 0  # (date, member) fields sampled and written by this run
    skipped: int = 0  # already done in the store (resumed)
    seconds: float = 0.0  # wall time of the sampling loop (model loading excluded)
    date_seconds: dict[str, float] = field(default_factory=dict)
    created: bool = True

    @property
    def samples_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def clipped_variables(cfg: HpcdsConfig) -> list[int]:
    """Indices into data.variables of the data.nonnegative variables (absent names ignored)."""
    return [i for i, v in enumerate(cfg.data.variables) if v in set(cfg.data.nonnegative)]


def sampling_identity(cfg: HpcdsConfig, model: SamplingModel, lr_store: str) -> dict:
    """What a rerun must agree on to resume a store: everything the values depend on
    (besides the layout: dates, variables, grid, members) — not members_per_batch."""
    s, d = cfg.sampling, cfg.diffusion
    ident = {
        "checkpoint_sha256": model.sha256,
        "weights": model.weights,
        "deterministic": model.deterministic,
        "lr_store": str(Path(lr_store).resolve()),
        "seed": int(s.seed),
        "nonnegative": [cfg.data.variables[i] for i in clipped_variables(cfg)],
    }
    if not model.deterministic:
        ident.update({"solver": s.solver.value, "schedule": s.schedule.value,
                      "steps": int(s.steps), "sigma_min": float(d.sigma_min),
                      "sigma_max": float(d.sigma_max), "rho": float(d.rho)})
        if s.solver is Solver.heun:
            ident.update({"S_churn": float(s.S_churn), "S_min": float(s.S_min),
                          "S_max": float(s.S_max), "S_noise": float(s.S_noise)})
        if s.schedule is Schedule.piecewise:
            ident.update({"piecewise_split": float(s.piecewise_split),
                          "piecewise_high_fraction": float(s.piecewise_high_fraction)})
    return ident


def provenance(cfg: HpcdsConfig, model: SamplingModel, ds: PairedDataset, sigmas) -> dict:
    return {
        "tool": "hpcds sample",
        "hpcds_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "torch_version": torch.__version__,
        "checkpoint": str(model.checkpoint.resolve()),
        "checkpoint_sha256": model.sha256,
        "checkpoint_step": model.step,
        "weights": model.weights,
        "sigma_data": model.precond.sigma_data,
        "deterministic": model.deterministic,
        "solver": cfg.sampling.solver.value,
        "schedule": cfg.sampling.schedule.value,
        "steps": int(cfg.sampling.steps),
        "sigmas": [float(s) for s in sigmas],
        "seed": int(cfg.sampling.seed),
        "S_churn": cfg.sampling.S_churn, "S_min": cfg.sampling.S_min,
        "S_max": cfg.sampling.S_max, "S_noise": cfg.sampling.S_noise,
        "members_per_batch": int(cfg.sampling.members_per_batch),
        "noise": "counter-based (hpcds.diffusion.noise), stream seed blake2b(seed, date), "
                 "member key (lr_member << 32 | member), step -1 = initial latents"
                 + ("" if model.noise_shape is None else
                    "; coloured by the training residuals' DCT spectrum (diffusion.noise="
                    "residual_spectrum, hpcds/diffusion/noise_shape.py)"),
        "lr_store": str(Path(ds.lr.path).resolve()),
        "static_store": str(Path(ds.static_store.path).resolve()),
        "normalisation": ds.normalisation.to_dict(),
        "statistics": "none: the ensemble store carries no statistics arrays",
    }


class _Conditioner:
    """Per date: LR member k → (interp(x_LR) (V, N) float64, cond (N, V) float32), and the
    forcings (N, F) float32 — read through public store APIs (PairedDataset reads LR member 0
    only)."""

    def __init__(self, ds: PairedDataset):
        self.ds = ds
        lr_index = store_cells_for_grid(ds.lr, ds.lr_grid, "the LR store",
                                        f"set grid.lr to the store's grid ({ds.lr.resolution})")
        self.lr_cells = lr_index[ds.lr_needed]
        self.static = ds.static_fields
        n = ds.normalisation
        self.mean, self.std = n.input_mean[:, None], n.input_std[:, None]
        self._date, self._cache = None, {}

    def set_date(self, date: np.datetime64) -> np.ndarray:
        self._date, self._cache = date, {}
        self._t_lr = int(self.ds.lr.time_index([date])[0])
        return forcing_fields(self.ds.hr_grid, self.static, date, cells=self.ds.hr_cells)[1].T

    def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._cache:
            lr = self.ds.lr.read(self._t_lr, self.ds.variables, cells=self.lr_cells,
                                 ensemble=int(k))[0, :, 0]
            require_finite(lr, self.ds.variables, f"the LR store {self.ds.lr.path}",
                           f"date {iso(self._date)}, LR member {k}",
                           "fix the store or restrict data.start_date/end_date")
            interp = self.ds.interpolate(lr)  # (V, N) float64
            check_domain(interp, self.ds.normalisation.log_offset, self.ds.variables,
                         f"the interpolated LR store, date {iso(self._date)}, LR member {k}")
            cond = ((interp - self.mean) / self.std).T.astype(np.float32)
            self._cache[k] = (interp, np.ascontiguousarray(cond))
        return self._cache[k]


def sample_batch(model: SamplingModel, cfg: HpcdsConfig, sigmas: torch.Tensor,
                 cond: np.ndarray, forcings: np.ndarray, seed: int, keys: np.ndarray,
                 node_index: np.ndarray) -> np.ndarray:
    """Normalised residual samples (B, N, V) float64 for one batch.

    cond (B, N, V) float32, forcings (N, F) float32, keys (B,) noise member keys,
    node_index (N,) the global HR node index of each row."""
    device = model.device
    B, N, V = cond.shape
    cond_t = torch.from_numpy(cond).to(device)
    forc_t = torch.from_numpy(forcings).to(device).unsqueeze(0).expand(B, -1, -1)
    if model.deterministic:  # the conditional mean; `keys` are not used
        with torch.no_grad():
            return model.precond.regress(cond_t, forc_t).double().cpu().numpy()
    # white, or coloured as in training (diffusion.noise, hpcds/diffusion/noise_shape.py)
    noise_fn = make_noise_fn(seed, keys, node_index, V, device=device, shape=model.noise_shape)
    latents = sigmas[0].to(device) * noise_fn(-1)
    denoiser = model.precond.as_denoiser(cond_t, forc_t)
    with torch.no_grad():
        x = sample(cfg.sampling, denoiser, latents, sigmas.to(device), noise_fn=noise_fn)
    return x.cpu().numpy()


def generate(cfg: HpcdsConfig, *, checkpoint: str | os.PathLike | None = None,
             overwrite: bool = False, model: SamplingModel | None = None,
             on_write: Callable[[int, np.ndarray], None] | None = None,
             progress: bool | None = None, report: Callable[[str], None] | None = None,
             parallel: ParallelState | None = None) -> GenerateResult:
    """Sample `cfg.sampling.members` HR members per LR member for every date into
    `cfg.sampling.output`, resuming an existing matching store (see the module docstring).

    progress: tqdm bar over (date, member batch) (None: only on a terminal; only on world
    rank 0); report: called with one line per date (timing, of this rank's group).
    parallel: `setup_parallel(cfg.parallel)` of a multi-rank launch (every rank calls
    generate): ensemble groups × model-parallel shards, see `hpcds.ensemble.parallel`. A
    `model` passed in is sharded in place there. The result's written/skipped count the
    whole job's (date, member) fields."""
    ranks = SamplingRanks.of(parallel)
    n_cells = grid_point_count(cfg.grid.hr)
    chunk_cells, hr_ranges = ranks.decide(
        lambda: plan_shards(cfg.sampling.output, n_cells, ranks.P, overwrite))
    ds = PairedDataset.from_config(cfg, hr_cells=hr_ranges[ranks.p], require_complete=False)
    ranks.agree_dates(ds)
    if not ds.report.complete and ranks.is_root:
        log.warning("sampling only the dates both stores hold: %s", ds.report.describe())
    model = model or load_sampling_model(cfg, ds.hr_grid, checkpoint,
                                         parts=ranks.graph_parts(n_cells, hr_ranges))
    ranks.shard_model(model, n_cells, hr_ranges)  # after the (EMA) weights are loaded
    ds.normalisation = model.normalisation
    norm = model.normalisation
    sigmas = make_schedule(cfg.sampling, cfg.diffusion)
    fewest = spectrum_min_steps(cfg.sampling)
    if cfg.sampling.steps < fewest and ranks.is_root:
        log.warning("sampling.steps=%d is below %d, the fewest at which %s/%s keeps its own "
                    "error at the smallest scales within 5 %% (it adds power there that "
                    "grows with wavenumber): raise sampling.steps for realistic spectra",
                    cfg.sampling.steps, fewest, Solver(cfg.sampling.solver).value,
                    Schedule(cfg.sampling.schedule).value)

    M, K = int(cfg.sampling.members), int(ds.lr.n_ensemble)
    layout = EnsembleLayout(grid=ds.hr_grid, variables=tuple(ds.variables), dates=ds.dates,
                            frequency=ds.hr.frequency, lr_members=K, members=M,
                            chunk_cells=chunk_cells)
    output = Path(cfg.sampling.output)
    # --overwrite keeps the old store until the new one is complete (module docstring)
    replacing = overwrite and ranks.decide(lambda: output.exists() or output.is_symlink())
    target = replacement_path(output) if replacing else output
    store, created = ranks.open_store(
        target, layout, identity=sampling_identity(cfg, model, ds.lr.path),
        overwrite=overwrite, metadata=ds.hr.variables_metadata,
        config_yaml=to_yaml(cfg),
        provenance={**provenance(cfg, model, ds, sigmas),
                    "parallel": {"model_parallel": ranks.P, "ensemble_groups": ranks.D,
                                 "hr_ranges": [list(r) for r in hr_ranges]}})
    result = GenerateResult(path=output, n_dates=len(ds.dates),
                            n_members=store.n_members, created=created)

    conditioner = _Conditioner(ds)
    start, stop = ds.hr_cells
    node_index = np.arange(start, stop, dtype=np.int64)  # global SFC index of each HR row
    res_mean, res_std = norm.residual_mean[None, None, :], norm.residual_std[None, None, :]
    nonnegative = clipped_variables(cfg)
    batches = member_batches(store.n_members, cfg.sampling.members_per_batch)
    # rank 0's view of the flags for every rank: all groups must agree on the work list
    done = ranks.decide(store.done)
    todo = []  # (date index in ds, t in the store, batch)
    for i, date in enumerate(ds.dates):
        t = store.time_index(date)
        for batch in batches:
            if done[t, batch].all():
                result.skipped += len(batch)
            else:
                todo.append((i, t, batch))
    to_write = sum(int((~done[t, batch]).sum()) for _, t, batch in todo)
    result.skipped += sum(int(done[t, batch].sum()) for _, t, batch in todo)
    todo = ranks.share(todo)  # this ensemble group's batches

    regressed: dict[tuple[int, int], np.ndarray] = {}

    def regression(k: int, forcings: np.ndarray) -> np.ndarray:
        key = (current, k)
        if key not in regressed:
            if regressed and next(iter(regressed))[0] != current:
                regressed.clear()  # keep one date's
            regressed[key] = sample_batch(model, cfg, sigmas, conditioner(k)[1][None],
                                          forcings, 0, np.zeros(1, np.int64), node_index)[0]
        return regressed[key]

    bar = tqdm(total=len(todo), desc="sample", unit="batch", leave=False, file=sys.stderr,
               disable=(not ranks.is_root) or (None if progress is None else not progress))
    started = time.perf_counter()
    current, forcings, date_start, date_written = None, None, 0.0, 0
    try:
        for n, (i, t, batch) in enumerate(todo):
            if i != current:
                current, date_start, date_written = i, time.perf_counter(), 0
                forcings = conditioner.set_date(ds.dates[i])
            k_of = batch // M
            conds = [conditioner(int(k)) for k in k_of]
            if model.deterministic:  # one forward pass per (date, LR member), copied to its M
                x = np.stack([regression(int(k), forcings) for k in k_of])
            else:
                x = sample_batch(model, cfg, sigmas, np.stack([c for _, c in conds]), forcings,
                                 date_seed(cfg.sampling.seed, ds.dates[i]),
                                 member_keys(batch, M), node_index)
            residual = x * res_std + res_mean  # (B, N, V) float64, in f's units
            interp = np.stack([interp for interp, _ in conds])  # (B, V, N) physical
            hr = inverse(residual.transpose(0, 2, 1) + transformed(interp, norm.log_offset, 1),
                         norm.log_offset, 1)
            hr[:, nonnegative] = np.maximum(hr[:, nonnegative], 0.0)  # data.nonnegative
            fresh = ~done[t, batch]
            store.write(t, batch[fresh], hr[fresh], cells=slice(start, stop))
            ranks.group_barrier()  # a member is done only once all P shards wrote it
            if ranks.p == 0:
                store.mark_done(t, batch[fresh])
            date_written += int(fresh.sum())
            bar.update(1)
            if on_write is not None:
                on_write(t, batch[fresh])
            last_of_date = n + 1 == len(todo) or todo[n + 1][0] != i
            if last_of_date:
                seconds = time.perf_counter() - date_start
                result.date_seconds[iso(ds.dates[i])] = seconds
                line = (f"{iso(ds.dates[i])}: {date_written} members in {seconds:.2f} s "
                        f"({date_written / max(seconds, 1e-9):.2f} samples/s)")
                log.info(line)
                if report is not None:
                    bar.clear()
                    report(line)
        ranks.world_barrier()  # the store is complete (rank 0's time covers every group)
        if replacing:  # only now does the old ensemble go
            ranks.decide(lambda: publish_dir(target, output, overwrite=True))
        result.written = to_write
    finally:
        result.seconds = time.perf_counter() - started
        bar.close()
    return result


def open_ensemble(path: str | os.PathLike) -> EnsembleStore:
    """Open a finished (or partial) ensemble store for reading."""
    return EnsembleStore.open(path, mode="r")


__all__: Sequence[str] = ("generate", "GenerateResult", "sample_batch", "date_seed",
                          "member_keys", "member_batches", "sampling_identity", "open_ensemble")
