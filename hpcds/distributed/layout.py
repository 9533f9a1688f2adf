"""The parallel layout as plain data: world = P model-parallel ranks × D replicas.

A model instance is sharded over P consecutive ranks (its model-parallel group: halo
exchanges, sharded losses). The D = world / P replicas are the data-parallel ranks in
training (ZeRO shards the optimizer over them) and the ensemble groups in sampling. Rank
r = d·P + p sits at model-parallel rank p of replica d, so a model-parallel group is a
block of consecutive ranks: on one node whenever P divides the ranks per node, where the
halo traffic stays on the fastest links.

`parallel.ensemble_groups` = 0 (the default) means "derive D from the world size"; any
other value must equal world / P (a check that the job was launched as planned). Everything here is checked without processes; `groups.py` makes the
process groups from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpcds.errors import ConfigError


@dataclass(frozen=True)
class ParallelLayout:
    world_size: int
    model_parallel: int

    def __post_init__(self):
        W, P = self.world_size, self.model_parallel
        if W < 1:
            raise ConfigError(f"world size {W}: need at least one rank")
        if P < 1:
            raise ConfigError(f"parallel.model_parallel={P}: must be >= 1")
        if W % P:
            raise ConfigError(f"world size {W} is not divisible by parallel.model_parallel={P}; "
                              f"launch a multiple of {P} ranks or change model_parallel")

    @classmethod
    def from_config(cls, parallel, world_size: int) -> "ParallelLayout":
        """From a ParallelConfig (model_parallel, ensemble_groups) and the launched world."""
        layout = cls(int(world_size), int(parallel.model_parallel))
        groups = int(parallel.ensemble_groups)
        if groups != 0 and groups != layout.data_parallel:
            raise ConfigError(
                f"parallel.ensemble_groups={groups} does not fit world size {world_size} with "
                f"parallel.model_parallel={layout.model_parallel} ({layout.data_parallel} "
                f"model replicas); set ensemble_groups={layout.data_parallel} or 0 (derived)")
        return layout

    @property
    def data_parallel(self) -> int:
        """D: model replicas (data-parallel ranks in training, ensemble groups in sampling)."""
        return self.world_size // self.model_parallel

    def model_parallel_rank(self, rank: int) -> int:
        """p: this rank's shard index within its model instance."""
        return self._check(rank) % self.model_parallel

    def data_parallel_rank(self, rank: int) -> int:
        """d: which replica / ensemble group this rank belongs to."""
        return self._check(rank) // self.model_parallel

    def model_parallel_groups(self) -> list[list[int]]:
        """D lists of P consecutive global ranks: the ranks sharing one model instance."""
        P = self.model_parallel
        return [list(range(d * P, (d + 1) * P)) for d in range(self.data_parallel)]

    def data_parallel_groups(self) -> list[list[int]]:
        """P lists of D global ranks holding the same shard in every replica (ZeRO, grads)."""
        P = self.model_parallel
        return [list(range(p, self.world_size, P)) for p in range(P)]

    def model_parallel_group_of(self, rank: int) -> list[int]:
        return self.model_parallel_groups()[self.data_parallel_rank(rank)]

    def data_parallel_group_of(self, rank: int) -> list[int]:
        return self.data_parallel_groups()[self.model_parallel_rank(rank)]

    def _check(self, rank: int) -> int:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside world size {self.world_size}")
        return rank

    def describe(self) -> str:
        return (f"{self.world_size} ranks = {self.model_parallel} model-parallel × "
                f"{self.data_parallel} data-parallel/ensemble")
