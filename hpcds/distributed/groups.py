"""Process groups from the layout, and the one-call setup for trainers and samplers.

    state = setup_parallel(cfg.parallel)        # discover env, init torch.distributed,
                                                # groups, halo transport
    state.ctx                                   # ShardContext of the model-parallel group
    state.data_parallel_group                   # ZeRO / gradient averaging across replicas
    ...
    teardown_parallel()

torch.distributed is initialised with gloo on CPU, NCCL when CUDA is available (each rank
on cuda:LOCAL_RANK). With an MPI launcher and no MASTER_ADDR, rank 0's host name and a free
port are broadcast over MPI. The MPI halo transport splits COMM_WORLD by replica, ordered by
model-parallel rank, so its ranks coincide with the torch group's.
"""

from __future__ import annotations

import datetime
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpcds.distributed import primitives as prim
from hpcds.distributed.env import DistEnv, LaunchError, discover_env
from hpcds.distributed.layout import ParallelLayout
from hpcds.distributed.transport import MpiTransport, TorchP2PTransport
from hpcds.distributed.verbs import ShardContext

TRANSPORTS = ("torch", "mpi")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def init_distributed(env: DistEnv | None = None, backend: str | None = None,
                     timeout_s: float = 300.0) -> DistEnv:
    """Initialise the default torch.distributed group for `env` (discovered when None).
    A world of one rank initialises nothing. Idempotent."""
    env = discover_env() if env is None else env
    if env.world_size == 1 or prim.is_initialized():
        return env
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    addr, port = env.master_addr, env.master_port
    if addr is None:  # MPI launcher without a rendezvous address: rank 0 picks one
        if env.launcher not in ("openmpi", "pmi"):
            raise LaunchError(f"{env.launcher}: set MASTER_ADDR for the rendezvous")
        addr, port = prim.mpi_bcast_object(prim.mpi_world(), (socket.gethostname(),
                                                               _free_port()))
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=env.rank,
                            world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return env


@dataclass(frozen=True, eq=False)
class ParallelState:
    """This rank's groups: `ctx` for the model-parallel group (halos, sharded reductions);
    `data_parallel_group` across replicas holding the same shard (None in a world of one)."""

    env: DistEnv
    layout: ParallelLayout
    model_parallel_group: object
    data_parallel_group: object
    ctx: ShardContext

    @property
    def model_parallel_rank(self) -> int:
        return self.layout.model_parallel_rank(self.env.rank)

    @property
    def data_parallel_rank(self) -> int:
        return self.layout.data_parallel_rank(self.env.rank)


def new_groups(layout: ParallelLayout, rank: int) -> tuple[object, object]:
    """(model-parallel group, data-parallel group) of `rank`. Collective: every rank creates
    every group, in the same order."""
    if layout.world_size == 1:
        return None, None
    mine_mp = mine_dp = None
    for ranks in layout.model_parallel_groups():
        g = dist.new_group(ranks)
        mine_mp = g if rank in ranks else mine_mp
    for ranks in layout.data_parallel_groups():
        g = dist.new_group(ranks)
        mine_dp = g if rank in ranks else mine_dp
    return mine_mp, mine_dp


def make_transport(kind: str, layout: ParallelLayout, env: DistEnv, mp_group):
    """The halo transport `kind` ("torch" | "mpi") over this rank's model-parallel group."""
    kind = getattr(kind, "value", kind)
    if kind == "torch":
        return TorchP2PTransport(mp_group)
    if kind == "mpi":
        world = prim.mpi_world()
        if world.Get_size() != env.world_size or world.Get_rank() != env.rank:
            raise LaunchError(
                f"parallel.halo_transport=mpi needs an MPI launch (mpirun / srun --mpi): MPI "
                f"sees rank {world.Get_rank()} of {world.Get_size()}, the job rank "
                f"{env.rank} of {env.world_size}; launch with mpirun or use halo_transport=torch")
        comm = world.Split(color=layout.data_parallel_rank(env.rank),
                           key=layout.model_parallel_rank(env.rank))
        return MpiTransport(comm)
    raise LaunchError(f"parallel.halo_transport={kind!r}: choose one of {', '.join(TRANSPORTS)}")


def setup_parallel(parallel, env: DistEnv | None = None, backend: str | None = None
                   ) -> ParallelState:
    """From a ParallelConfig: discover the launch, init torch.distributed, validate the
    layout, create the groups and the halo transport."""
    env = init_distributed(env, backend)
    layout = ParallelLayout.from_config(parallel, env.world_size)
    mp_group, dp_group = new_groups(layout, env.rank)
    if layout.model_parallel == 1:
        ctx = ShardContext.single()
    else:
        transport = make_transport(parallel.halo_transport, layout, env, mp_group)
        ctx = ShardContext(layout.model_parallel_rank(env.rank), layout.model_parallel,
                           mp_group, transport)
    return ParallelState(env, layout, mp_group, dp_group, ctx)


def teardown_parallel() -> None:
    if prim.is_initialized():
        dist.destroy_process_group()
