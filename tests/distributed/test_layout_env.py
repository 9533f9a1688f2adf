"""Parallel layout and launcher discovery as plain data (no processes)."""

from __future__ import annotations

import pytest

from hpcds.config.schema import ParallelConfig
from hpcds.distributed import DistEnv, LaunchError, ParallelLayout, discover_env, expand_hostlist
from hpcds.errors import ConfigError


def test_layout_groups_partition_the_world():
    lay = ParallelLayout(12, 4)
    assert lay.data_parallel == 3
    assert lay.model_parallel_groups() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert lay.data_parallel_groups() == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]
    for r in range(12):
        assert lay.model_parallel_group_of(r)[lay.model_parallel_rank(r)] == r
        assert lay.data_parallel_group_of(r)[lay.data_parallel_rank(r)] == r
    assert (lay.model_parallel_rank(6), lay.data_parallel_rank(6)) == (2, 1)
    assert ParallelLayout(1, 1).model_parallel_groups() == [[0]]


def test_layout_errors_are_one_line_with_the_fix():
    with pytest.raises(ConfigError, match=r"world size 6 is not divisible by "
                                          r"parallel.model_parallel=4; launch a multiple of 4"):
        ParallelLayout(6, 4)
    with pytest.raises(ConfigError, match="model_parallel=0"):
        ParallelLayout(4, 0)
    with pytest.raises(ConfigError, match=r"ensemble_groups=3 does not fit world size 8 .* "
                                          r"set ensemble_groups=4 or 0"):
        ParallelLayout.from_config(ParallelConfig(model_parallel=2, ensemble_groups=3), 8)
    assert ParallelLayout.from_config(ParallelConfig(model_parallel=2, ensemble_groups=4),
                                      8).data_parallel == 4
    assert ParallelLayout.from_config(ParallelConfig(model_parallel=2), 8).data_parallel == 4


def test_hostlist_expansion():
    assert expand_hostlist("node[001-003,007],gpu5") == ["node001", "node002", "node003",
                                                         "node007", "gpu5"]
    assert expand_hostlist("a1,b[9-10]") == ["a1", "b9", "b10"]
    assert expand_hostlist("localhost") == ["localhost"]


@pytest.mark.parametrize("environ, expected", [
    ({}, DistEnv(0, 1, 0, 1, "single", "127.0.0.1")),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
      "MASTER_ADDR": "h0", "MASTER_PORT": "1234", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
     DistEnv(3, 4, 1, 2, "torchrun", "h0", 1234)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
      "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_JOB_NODELIST": "gpu[07-08]"},
     DistEnv(5, 8, 1, 4, "slurm", "gpu07")),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2",
      "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "n1", "MASTER_PORT": "777"},
     DistEnv(1, 2, 1, 2, "slurm", "n1", 777)),
    # mpirun inside an allocation: OMPI_ wins over the inherited batch-step SLURM_PROCID=0
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3",
      "OMPI_COMM_WORLD_LOCAL_RANK": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
      "SLURM_PROCID": "0", "SLURM_NTASKS": "3"},
     DistEnv(2, 3, 2, 3, "openmpi", None)),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"},
     DistEnv(1, 2, 1, 2, "pmi", None)),
])
def test_discover_env(environ, expected):
    assert discover_env(environ) == expected


def test_discover_env_errors():
    with pytest.raises(LaunchError, match="rank 4 is outside world size 4"):
        discover_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(LaunchError, match="SLURM_PROCID='x' is not an integer"):
        discover_env({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"})
    with pytest.raises(LaunchError, match="none of OMPI_COMM_WORLD_SIZE is set"):
        discover_env({"OMPI_COMM_WORLD_RANK": "0"})


def test_single_process_setup_needs_no_process_group():
    from hpcds.distributed import setup_parallel
    from hpcds.distributed import primitives as prim
    state = setup_parallel(ParallelConfig(), env=DistEnv(0, 1, 0, 1, "single"))
    assert (state.ctx.size, state.model_parallel_group, state.data_parallel_group) == (1, None,
                                                                                       None)
    assert not prim.is_initialized()
    with pytest.raises(ConfigError, match="not divisible"):
        setup_parallel(ParallelConfig(model_parallel=2), env=DistEnv(0, 1, 0, 1, "single"))


def test_unknown_transport_is_named():
    from hpcds.distributed import make_transport
    with pytest.raises(LaunchError, match="halo_transport='carrier-pigeon': choose one of "
                                          "torch, mpi"):
        make_transport("carrier-pigeon", ParallelLayout(2, 2), DistEnv(0, 2, 0, 2, "torchrun"),
                       None)
