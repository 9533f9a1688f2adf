"""Training data: the date split, normalisation statistics, tensors, and a resumable order.

    split = split_dates(ds, cfg.training.val_dates)          # views over one PairedDataset
    norm = prepare_normalisation(cfg, split, run_dir)        # train dates only; saved in run_dir
    samples = TrainSamples(split.train)                      # ds[i] -> (N, C) float32 tensors
    order = SampleOrder(len(samples), seed)                  # shuffled epochs, checkpointable
    batch = collate([samples[i] for i in order.take(B)])     # (B, N, C)

The last `val_dates` dates are validation; statistics come from the training dates only
(from `data.stats_file` or the run directory when one there was computed over exactly the
same stores, variables and dates, else streamed now) and are written to
`run_dir/statistics.json` — the run's own record of the normalisation it trained with.

`SampleOrder` draws one permutation per epoch from a seeded `torch.Generator`. Its state is
(generator state at the start of the current epoch, epoch, index within the epoch), so a
resumed run redraws the same permutation and continues at the same sample.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpcds.checkpoint import STATS_NAME
from hpcds.config.schema import HpcdsConfig
from hpcds.data.dates import iso
from hpcds.data.paired import Normalisation, PairedDataset
from hpcds.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

TENSOR_KEYS = ("cond", "target", "forcings")


@dataclass
class Split:
    train: PairedDataset
    val: PairedDataset | None  # None when training.val_dates == 0


def subset(ds: PairedDataset, dates: np.ndarray) -> PairedDataset:
    """A view of `ds` on some of its dates: stores, grids and matrices are shared."""
    view = copy.copy(ds)
    view.dates = dates
    return view


def split_dates(ds: PairedDataset, val_dates: int) -> Split:
    """The last `val_dates` dates are validation, the others training."""
    if val_dates < 0 or val_dates >= len(ds):
        raise ConfigError(f"bad value {val_dates} for config key 'training.val_dates': expected "
                          f"0 <= val_dates < {len(ds)} (the number of dates), so that some "
                          "dates are left for training")
    n_train = len(ds) - val_dates
    return Split(train=subset(ds, ds.dates[:n_train]),
                 val=subset(ds, ds.dates[n_train:]) if val_dates else None)


def _stats_match(payload: dict, ds: PairedDataset) -> bool:
    return (payload.get("variables") == list(ds.variables)
            and payload.get("lr_store") == str(ds.lr.path)
            and payload.get("hr_store") == str(ds.hr.path)
            and payload.get("dates") == [iso(ds.dates[0]), iso(ds.dates[-1])]
            and payload.get("n_dates") == len(ds)
            and np.array_equal(np.asarray(payload.get("log_offset", np.zeros(len(ds.variables))),
                                          np.float64), ds.log_offset))


def _load_matching(path: Path, ds: PairedDataset) -> Normalisation | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or not _stats_match(payload, ds):
        return None
    try:
        return Normalisation(
            variables=tuple(payload["variables"]), log_offset=ds.log_offset.copy(),
            **{k: np.asarray(payload[k], dtype=np.float64)
               for k in ("input_mean", "input_std", "residual_mean", "residual_std")})
    except (KeyError, TypeError, ValueError):
        return None


def prepare_normalisation(cfg: HpcdsConfig, split: Split, run_dir: str | Path,
                          progress=None, merge=None, write: bool = True,
                          barrier=None) -> tuple[Normalisation, str]:
    """Set the normalisation of both views from the training dates; save it in `run_dir`
    (when `write`: one rank of a sharded run). `merge(stats) -> stats` combines the shards'
    residual statistics (TrainParallel.merge_stats; collective). A saved file describes the
    whole grid, so every shard may use it. `barrier()` (collective over every rank) comes
    between every rank's choice and the write: without it a replica group that looks for the
    file after rank 0 wrote it would skip the merge its model-parallel peers enter, and the
    group's collectives would pair up wrongly.

    Returns it and where it came from ("run_dir", "data.stats_file" or "computed")."""
    run_dir = Path(run_dir)
    norm, source = None, "computed"
    for path, name in ((run_dir / STATS_NAME, "run_dir"),
                       (Path(cfg.data.stats_file), "data.stats_file")):
        if path.is_file():
            norm = _load_matching(path, split.train)
            if norm is not None:
                source = name
                break
    if norm is None:
        stats = split.train.residual_statistics(progress=progress)
        norm = split.train.set_normalisation(stats if merge is None else merge(stats))
    for view in (split.train, split.val):
        if view is not None:
            view.normalisation = norm
    if barrier is not None:
        barrier()  # every rank has chosen its source before the file changes
    if write:
        save_normalisation(split, run_dir)
    log.info("normalisation: %s", source)
    return norm, source


def save_normalisation(split: Split, run_dir: str | Path) -> Path:
    """Write the training view's normalisation as run_dir/statistics.json (atomically)."""
    return split.train.save_statistics(Path(run_dir) / STATS_NAME)


class TrainSamples(torch.utils.data.Dataset):
    """`PairedDataset` samples as float32 tensors in (N, C) layout (cells first)."""

    def __init__(self, ds: PairedDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.ds[int(i)]
        return {k: torch.from_numpy(np.ascontiguousarray(sample[k].T, dtype=np.float32))
                for k in TENSOR_KEYS}


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """(N, C) samples → (B, N, C) batch."""
    return {k: torch.stack([s[k] for s in samples]) for k in TENSOR_KEYS}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy to `device`; to a GPU from pinned memory, asynchronously (no host sync)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class SampleOrder:
    """An endless stream of sample indices: a fresh seeded permutation each epoch."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ConfigError("no training dates: lower training.val_dates or add dates")
        self.n = n
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        self.index = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._epoch_state = self.generator.get_state()
        self._perm = torch.randperm(self.n, generator=self.generator).tolist()

    def take(self, k: int) -> list[int]:
        """The next `k` indices (crossing into the next epoch when this one runs out)."""
        out = []
        while len(out) < k:
            if self.index == self.n:
                self.epoch += 1
                self.index = 0
                self._start_epoch()
            step = min(k - len(out), self.n - self.index)
            out.extend(self._perm[self.index:self.index + step])
            self.index += step
        return out

    def state_dict(self) -> dict:
        return {"n": self.n, "epoch": self.epoch, "index": self.index,
                "generator": self._epoch_state.clone()}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n"]) != self.n:
            raise CheckpointError(f"the checkpoint was trained on {int(state['n'])} dates, this "
                              f"config has {self.n}: keep data.start_date/end_date and "
                              "training.val_dates as they were, or start a new run_dir")
        self.generator.set_state(state["generator"])
        self._start_epoch()  # redraws this epoch's permutation from its start state
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
