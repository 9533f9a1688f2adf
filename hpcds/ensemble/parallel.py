"""Who does what in a parallel sampling job: G ensemble groups × P model-parallel ranks.

    ranks = SamplingRanks.of(state)                       # state: setup_parallel(cfg.parallel)
    chunk, hr_ranges = ranks.decide(lambda: plan_shards(path, n_cells, ranks.P, overwrite))
    ds = PairedDataset.from_config(cfg, hr_cells=hr_ranges[ranks.p])   # only its own cells
    ranks.shard_model(model, n_cells, hr_ranges)          # EMA weights already loaded
    store, created = ranks.open_store(path, layout, ...)  # rank 0 creates, then the others open
    for item in ranks.share(todo): ... write own (members, cells); ranks.group_barrier();
                                       rank p = 0 of the group marks the members done

The layout is `hpcds.distributed.ParallelLayout`: world rank r = d·P + p is shard p of
ensemble group d. Ranks of one group run ONE sharded model (every forward needs all P of
them), so they take the same batches in the same order; the G groups split the batches.

Chunk alignment. Two ranks never write the same zarr chunk: `data` chunks are
(1, variables, 1, chunk_cells), so writers of different members never share one, and the P
shards of a member split the cells at multiples of chunk_cells (`chunk_aligned_ranges`). A
fresh store for P > 1 gets a chunk size that divides the shards evenly; an existing store
(resumption, perhaps with another P) keeps its chunking and the shards follow it. P = 1
keeps the single-process chunking (OUTPUT_CHUNK_CELLS) and the whole grid.

Failure handling. Setup steps that could fail on one rank only (creating the store, a
mismatched identity) go through `decide` / `everywhere`, which gather every rank's outcome
(one all_gather_object over the world) and raise the same error on every rank, so no rank
is left waiting in a later collective. In the sampling loop a failed rank ends the job (the
launcher stops the others); the done flags say what was finished.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hpcds.distributed import ParallelState, primitives as prim
from hpcds.ensemble.output import EnsembleLayout, EnsembleStore, check_identity, open_or_create
from hpcds.errors import ConfigError, StoreError, UserError
from hpcds.grids import shard_ranges

OUTPUT_CHUNK_CELLS = 65536  # cells per chunk of the output `data` (as hpcds.data.store)

T = TypeVar("T")


def chunk_aligned_ranges(n_cells: int, P: int, chunk_cells: int | None = None,
                         where: str = "the output store") -> tuple[int, list[tuple[int, int]]]:
    """(chunk_cells, P contiguous (start, stop) HR ranges covering [0, n_cells)) with every
    boundary a multiple of chunk_cells. chunk_cells None (a fresh store): at most
    OUTPUT_CHUNK_CELLS, chosen so that each rank gets the same number of whole chunks (the
    last rank up to one chunk short)."""
    n_cells, P = int(n_cells), int(P)
    if P < 1 or n_cells < P:
        raise ConfigError(f"{n_cells} HR cells cannot be split over parallel.model_parallel="
                          f"{P} ranks: use between 1 and {n_cells} model-parallel ranks")
    if chunk_cells is None:
        if P == 1:
            return OUTPUT_CHUNK_CELLS, [(0, n_cells)]  # the store caps it at n_cells
        per_rank = math.ceil(n_cells / P)
        chunks_per_rank = math.ceil(per_rank / OUTPUT_CHUNK_CELLS)
        chunk_cells = math.ceil(per_rank / chunks_per_rank)
        if math.ceil(n_cells / chunk_cells) < P:  # tiny grids: ceil rounding starves a rank
            chunk_cells = n_cells // P
    chunk_cells = int(chunk_cells)
    n_chunks = math.ceil(n_cells / chunk_cells)
    if n_chunks < P:
        raise StoreError(f"{where} is chunked by {chunk_cells} cells ({n_chunks} chunks of "
                         f"{n_cells} cells): at most {n_chunks} model-parallel ranks can write "
                         f"it without sharing a chunk; set parallel.model_parallel<={n_chunks} "
                         "or pass --overwrite to start a store chunked for this layout")
    ranges = [(a * chunk_cells, min(n_cells, b * chunk_cells))
              for a, b in shard_ranges(n_chunks, P)]
    return chunk_cells, ranges


def plan_shards(path: str | os.PathLike, n_cells: int, P: int, overwrite: bool
                ) -> tuple[int, list[tuple[int, int]]]:
    """(chunk_cells, HR ranges) for P shards writing the store at `path`: aligned to its
    existing chunking when it is resumed, else to a fresh one."""
    existing = None
    path = Path(path)
    if P > 1 and not overwrite and path.exists():
        existing = EnsembleStore.open(path).chunk_cells
    return chunk_aligned_ranges(n_cells, P, existing, where=str(path))


def _rebuild(kind: type, message: str, rank: int) -> BaseException:
    """Another rank's error, raised here: user errors keep their class and one-line message."""
    if isinstance(kind, type) and issubclass(kind, UserError):
        return kind(message if rank == 0 else f"(rank {rank}) {message}")
    return RuntimeError(f"rank {rank} failed: {getattr(kind, '__name__', kind)}: {message}")


@dataclass(frozen=True)
class SamplingRanks:
    """This process's place in the job: shard p of P in ensemble group d of D; world rank
    `rank` of `world`. `state` is None for a single process."""

    state: ParallelState | None
    rank: int = 0
    world: int = 1
    P: int = 1
    p: int = 0
    D: int = 1
    d: int = 0

    @classmethod
    def of(cls, state: ParallelState | None) -> "SamplingRanks":
        if state is None or state.layout.world_size == 1:
            return cls(None)
        lay = state.layout
        return cls(state, state.env.rank, lay.world_size, lay.model_parallel,
                   state.model_parallel_rank, lay.data_parallel, state.data_parallel_rank)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return (f"{self.world} ranks = {self.D} ensemble groups x {self.P} model-parallel; "
                f"this is rank {self.rank} (group {self.d}, shard {self.p})")

    # ------------------------------------------------------------------ collectives
    def everywhere(self, fn: Callable[[], T], root_only: bool = False) -> T:
        """fn() on every rank (or only on world rank 0); returns rank 0's result on every
        rank. If any rank raised, every rank raises (rank 0's result must pickle)."""
        value, err = None, None
        if not root_only or self.is_root:
            try:
                value = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                err = e
        if self.world == 1:
            if err is not None:
                raise err
            return value
        kind = (type(err) if isinstance(err, UserError) else type(err).__name__)  # pickles
        sent = (value if self.is_root else None, None if err is None else (kind, str(err)))
        got = prim.all_gather_object(sent)
        if err is not None:
            raise err
        for r, (_, e) in enumerate(got):
            if e is not None:
                raise _rebuild(e[0], e[1], r)
        return got[0][0]

    def decide(self, fn: Callable[[], T]) -> T:
        """fn() on world rank 0 only; its result (or its error) on every rank."""
        return self.everywhere(fn, root_only=True)

    def group_barrier(self) -> None:
        """Wait for every shard of this ensemble group (its model-parallel group)."""
        if self.P > 1:
            prim.barrier(self.state.model_parallel_group)

    def world_barrier(self) -> None:
        if self.world > 1:
            prim.barrier()

    # ------------------------------------------------------------------ setup
    def agree_dates(self, ds) -> None:
        """Keep the dates every shard's dataset holds (under data.nan_policy=skip_date a
        shard drops only the dates with NaNs in ITS cells; a single process drops the union)."""
        if self.world == 1:
            return
        common = ds.dates
        for dates in prim.all_gather_object(ds.dates):
            common = np.intersect1d(common, dates)
        if len(common) != len(ds.dates):
            ds.drop_dates(list(np.flatnonzero(~np.isin(ds.dates, common))))

    def graph_parts(self, n_cells: int, hr_ranges: Sequence[tuple[int, int]]):
        """What this rank's model builds of the graphs (`GraphParts` for the ranges
        shard_model will use); None for one process (the full graphs)."""
        if self.P == 1:
            return None
        from hpcds.models.shard_graphs import GraphParts

        return GraphParts.for_rank(self.state.ctx, n_cells, hr_ranges)

    def shard_model(self, model, n_cells: int, hr_ranges: Sequence[tuple[int, int]]) -> None:
        """Shard the sampling model's network over the group, on `hr_ranges` (collective
        over the group: its halo plans are verified by real exchanges)."""
        if self.P == 1:
            return
        from hpcds.models.parallelize import parallelize_model

        parallelize_model(model.precond.backbone, self.state.ctx, n_hr=n_cells,
                          hr_ranges=hr_ranges)

    def open_store(self, path: str | os.PathLike, layout: EnsembleLayout, *,
                   identity: dict, overwrite: bool, **create_kwargs
                   ) -> tuple[EnsembleStore, bool]:
        """World rank 0 creates (or opens and checks) the store; then every other rank opens
        it and checks its identity too (its own checkpoint and stores must match)."""
        mine: dict[str, Any] = {}

        def create() -> bool:
            mine["store"], created = open_or_create(path, layout, identity=identity,
                                                    overwrite=overwrite, **create_kwargs)
            return created

        created = self.decide(create)  # every rank waits here until the store exists

        def open_checked() -> None:
            if not self.is_root:
                mine["store"] = EnsembleStore.open(path, mode="r+")
                check_identity(mine["store"], layout, identity)

        self.everywhere(open_checked)
        return mine["store"], created

    def share(self, items: Sequence[T]) -> list[T]:
        """This ensemble group's items: round-robin over groups, in order (deterministic, so
        a rerun with the same layout and flags recomputes the same batches)."""
        return list(items[self.d::self.D])
