"""One rank of `srun -n N python tests/launch/slurm_allreduce.py`: rank, world size, local rank
and the rendezvous address from Slurm, torch.distributed (gloo) initialised from them, one
all-reduce and one all-gather; prints one JSON line per rank.

Rank discovery: `hpcds.distributed.env` is being written alongside (the distributed trainer);
until it lands this reads Slurm's variables directly, the same way launch/ will:
rank = SLURM_PROCID, world = SLURM_NTASKS, local rank = SLURM_LOCALID, MASTER_ADDR = the
first host of the step's node list (`scontrol show hostnames`), MASTER_PORT derived from the
job id (every rank computes the same one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import torch.distributed as dist


def slurm_rendezvous() -> tuple[int, int, int, str, int]:
    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    local = int(os.environ["SLURM_LOCALID"])
    addr = os.environ.get("MASTER_ADDR")
    if not addr:
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ["SLURM_JOB_NODELIST"]
        addr = subprocess.run(["scontrol", "show", "hostnames", nodes], check=True,
                              capture_output=True, text=True).stdout.split()[0]
    port = int(os.environ.get("MASTER_PORT") or 15000 + int(os.environ["SLURM_JOB_ID"]) % 20000)
    return rank, world, local, addr, port


def main() -> int:
    rank, world, local, addr, port = slurm_rendezvous()
    dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank,
                            world_size=world)
    x = torch.tensor([float(rank + 1)])
    dist.all_reduce(x)
    gathered = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(gathered, torch.tensor([float(rank)]))
    print(json.dumps({"rank": rank, "world": world, "local_rank": local, "addr": addr,
                      "port": port, "sum": x.item(), "gathered": [g.item() for g in gathered]}),
          flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
