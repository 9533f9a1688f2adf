"""A tiny benchmark with the oracle itself as the forecast (an ensemble store of exact draws
of p(HR|LR)), shared by the evaluation tests, and its single-forecast evaluation."""

import numpy as np
import pytest

from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.benchmark import VARIABLES, build_law, oracle_sample
from hpcds.data.paired import PairedDataset
from hpcds.ensemble.output import EnsembleLayout, create_ensemble_store
from hpcds.evaluate.run import evaluate

M = 6
OVERRIDES = ["benchmark.n_dates=4", "evaluation.bootstrap=10"]


def write_oracle_store(cfg, path, seed, members=M, skip_dates=()):
    """An ensemble store of `members` exact draws per date (oracle stream `seed`, one the
    evaluation does not use); dates at the indices `skip_dates` are left unfinished."""
    ds = PairedDataset.from_config(cfg)
    law = build_law(cfg)
    assert list(ds.variables) == list(VARIABLES)
    layout = EnsembleLayout(grid=ds.hr_grid, variables=tuple(ds.variables), dates=ds.dates,
                            frequency=ds.hr.frequency, lr_members=1, members=members)
    store = create_ensemble_store(path, layout, metadata=ds.hr.variables_metadata)
    lr_all = np.arange(ds.lr_grid.size)
    for i, date in enumerate(ds.dates):
        if i in skip_dates:
            continue
        lr = ds.read_lr(i, lr_all).astype(np.float64)
        t = store.time_index(date)
        store.write(t, np.arange(members), oracle_sample(law, lr, i, members, seed=seed))
        store.mark_done(t, np.arange(members))
    return path


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """(cfg, out): the benchmark stores under out, the oracle forecast at
    out/oracle_forecast.zarr."""
    out = tmp_path_factory.mktemp("eval")
    cfg = load_config("tiny", [f"run.out_dir={out}", *OVERRIDES])
    assert main(["data", "benchmark", "tiny", f"run.out_dir={out}", *OVERRIDES, "--quiet"]) == 0
    write_oracle_store(cfg, out / "oracle_forecast.zarr", seed=12345)
    return cfg, out


@pytest.fixture(scope="session")
def single_run(bench):
    """evaluate() of the oracle forecast alone (the source "forecast") into out/eval."""
    cfg, out = bench
    return evaluate(cfg, out / "oracle_forecast.zarr", out_dir=out / "eval", progress=False)
