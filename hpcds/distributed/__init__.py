"""Distributed layer: layout (plain data) → process groups; raw collectives (primitives)
→ autograd Functions → verbs that model and training code call; frozen halo plans with
verify(); two halo transports (torch.distributed point-to-point, mpi4py).

The only package modules that import torch.distributed or mpi4py live here; the model is
sharded from outside by `hpcds.models.parallelize`.
"""

from hpcds.distributed.env import DistEnv, LaunchError, discover_env, expand_hostlist
from hpcds.distributed.groups import (ParallelState, init_distributed, make_transport,
                                      new_groups, setup_parallel, teardown_parallel)
from hpcds.distributed.halo import (GraphShard, HaloPlan, HaloPlanError, gather_halo,
                                    graph_shard, scatter_halo_grad, window_plan)
from hpcds.distributed.layout import ParallelLayout
from hpcds.distributed.modules import HaloModule
from hpcds.distributed.transport import (CountingTransport, HaloTransport, LocalTransport,
                                         MpiTransport, TorchP2PTransport)
from hpcds.distributed.verbs import (ShardContext, all_reduce_replicated_grads, all_reduce_sum,
                                     halo_exchange)

__all__ = [
    "CountingTransport", "DistEnv", "GraphShard", "HaloModule", "HaloPlan", "HaloPlanError",
    "HaloTransport", "LaunchError", "LocalTransport", "MpiTransport", "ParallelLayout",
    "ParallelState", "ShardContext", "TorchP2PTransport", "all_reduce_replicated_grads",
    "all_reduce_sum", "discover_env", "expand_hostlist", "gather_halo", "graph_shard",
    "halo_exchange", "init_distributed", "make_transport", "new_groups", "scatter_halo_grad",
    "setup_parallel", "teardown_parallel", "window_plan",
]
