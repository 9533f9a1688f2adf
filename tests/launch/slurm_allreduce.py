"""One rank of `srun -n N python tests/launch/slurm_allreduce.py`: rank, world size, local rank
and the rendezvous address discovered from Slurm's variables by hpcds itself
(`hpcds.distributed.env.discover_env`: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, the
first host of SLURM_STEP_NODELIST), torch.distributed (gloo) initialised from them by
`init_distributed`, one all-reduce and one all-gather; prints one JSON line per rank.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from hpcds.distributed.env import discover_env
from hpcds.distributed.groups import init_distributed


def main() -> int:
    env = init_distributed(discover_env(), backend="gloo", timeout_s=120)
    x = torch.tensor([float(env.rank + 1)])
    dist.all_reduce(x)
    gathered = [torch.zeros(1) for _ in range(env.world_size)]
    dist.all_gather(gathered, torch.tensor([float(env.rank)]))
    print(json.dumps({"rank": env.rank, "world": env.world_size, "local_rank": env.local_rank,
                      "launcher": env.launcher, "addr": env.master_addr,
                      "port": env.master_port, "sum": x.item(),
                      "gathered": [g.item() for g in gathered]}), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
