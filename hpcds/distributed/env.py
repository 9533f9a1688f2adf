"""Who am I in the job: rank, world size and local rank from the launcher's environment.

Pure parsing of an environment mapping (tested without processes). Precedence, first match
wins:
  torchrun   RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
  Open MPI   OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
  PMI/MPICH  PMI_RANK, PMI_SIZE, MPI_LOCALRANKID (or PMI_LOCAL_RANK), MPI_LOCALNRANKS
  Slurm      SLURM_PROCID, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS), SLURM_LOCALID,
             SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE, SLURM_STEP_NODELIST / SLURM_JOB_NODELIST
  single     rank 0 of 1
MPI comes before Slurm: `mpirun` inside an allocation inherits the batch step's SLURM_PROCID=0
in every process, while its own OMPI_/PMI_ variables are right. Under Slurm the rendezvous
address is the first host of the step's node list unless MASTER_ADDR is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from hpcds.errors import UserError

DEFAULT_MASTER_PORT = 29500


class LaunchError(UserError):
    """The launcher's environment is incomplete or inconsistent."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job. `master_addr` is None when the launcher does not
    name one (MPI without MASTER_ADDR: `init_distributed` broadcasts rank 0's host)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    launcher: str  # "torchrun" | "openmpi" | "pmi" | "slurm" | "single"
    master_addr: str | None = None
    master_port: int = DEFAULT_MASTER_PORT

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise LaunchError(f"{self.launcher}: rank {self.rank} is outside world size "
                              f"{self.world_size}; check the launcher's rank variables")
        if not 0 <= self.local_rank < max(self.local_world_size, 1):
            raise LaunchError(f"{self.launcher}: local rank {self.local_rank} is outside "
                              f"{self.local_world_size} local ranks")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list → host names: "n[01-03,07],gpu5" → n01 n02 n03 n07 gpu5
    (zero padding kept; one bracket group per name, as Slurm writes them)."""
    hosts = []
    for name in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", name)
        if not m:
            hosts.append(name)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hi = hi or lo
            width = len(lo)
            hosts += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1)]
    return hosts


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int:
    for name in names:
        if env.get(name, "") != "":
            try:
                return int(env[name])
            except ValueError:
                raise LaunchError(f"{name}={env[name]!r} is not an integer") from None
    if default is None:
        raise LaunchError(f"none of {', '.join(names)} is set; launch with torchrun, srun "
                          "or mpirun")
    return default


def _slurm_tasks_on_this_node(env: Mapping[str, str]) -> int | None:
    """First entry of SLURM_*TASKS_PER_NODE ("4(x2),3" → 4) when every node has the same."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return None
    counts = {int(m) for m in re.findall(r"(\d+)(?:\(x\d+\))?", spec)}
    return counts.pop() if len(counts) == 1 else None


def discover_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """DistEnv from `environ` (default os.environ); see the module docstring."""
    env = os.environ if environ is None else environ
    addr = env.get("MASTER_ADDR") or None
    port = _int(env, "MASTER_PORT", default=DEFAULT_MASTER_PORT)
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK", default=0)
        return DistEnv(_int(env, "RANK"), world, local,
                       _int(env, "LOCAL_WORLD_SIZE", default=max(world, 1)), "torchrun",
                       addr or "127.0.0.1", port)
    if "OMPI_COMM_WORLD_RANK" in env:
        world = _int(env, "OMPI_COMM_WORLD_SIZE")
        return DistEnv(_int(env, "OMPI_COMM_WORLD_RANK"), world,
                       _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", default=0),
                       _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", default=world), "openmpi",
                       addr, port)
    if "PMI_RANK" in env:
        world = _int(env, "PMI_SIZE")
        return DistEnv(_int(env, "PMI_RANK"), world,
                       _int(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK", default=0),
                       _int(env, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", default=world), "pmi",
                       addr, port)
    if "SLURM_PROCID" in env:
        world = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") \
            or env.get("SLURM_NODELIST")
        if addr is None and nodes:
            addr = expand_hostlist(nodes)[0]
        return DistEnv(_int(env, "SLURM_PROCID"), world, _int(env, "SLURM_LOCALID", default=0),
                       _slurm_tasks_on_this_node(env) or world, "slurm", addr or "127.0.0.1",
                       port)
    return DistEnv(0, 1, 0, 1, "single", addr or "127.0.0.1", port)
