"""Checkpoints: every piece of state round-trips; bad files and misfit weights are one-line
`CheckpointError`s (and exit status 2 from the CLI)."""

import random

import numpy as np
import pytest
import torch

from hpcds.checkpoint import (LATEST, check_resumable, load_checkpoint, save_checkpoint,
                              step_name)
from hpcds.cli.main import main
from hpcds.config.load import load_config, to_yaml
from hpcds.config.schema import TrainingConfig
from hpcds.errors import CheckpointError
from hpcds.train import rng, train
from hpcds.train.data import SampleOrder
from hpcds.train.ema import EMA
from hpcds.train.schedule import WarmupCosine


def make_state(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = WarmupCosine(opt, TrainingConfig(steps=10, warmup_steps=2))
    ema = EMA(net, 0.9)
    order = SampleOrder(5, seed)
    gen = torch.Generator().manual_seed(seed)
    return net, opt, sched, ema, order, gen


def advance(net, opt, sched, ema, order, gen, steps):
    for _ in range(steps):
        order.take(2)
        loss = net(torch.randn(3, 4, generator=gen)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(net)
        torch.rand(1), np.random.rand(), random.random()  # move the global generators too


def snapshot(net, opt, sched, ema, order, gen):
    return (net.state_dict(), opt.state_dict(), sched.state_dict(), ema.state_dict(),
            order.take(3), torch.rand(4, generator=gen), torch.rand(4), np.random.rand(4),
            [random.random() for _ in range(4)])


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b


def test_round_trip_restores_every_state(tmp_path):
    pieces = make_state(0)
    net, opt, sched, ema, order, gen = pieces
    advance(*pieces, steps=3)
    save_checkpoint(tmp_path, {
        "step": 3, "model": net.state_dict(), "ema": ema.state_dict(),
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "data": order.state_dict(), "rng": rng.capture({"noise": gen}), "config": "{}"})
    expected = snapshot(*pieces)

    fresh = make_state(1)  # different seed: every piece differs until restored
    advance(*fresh, steps=1)
    state = load_checkpoint(tmp_path / LATEST)
    net2, opt2, sched2, ema2, order2, gen2 = fresh
    net2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    ema2.load_state_dict(state["ema"])
    order2.load_state_dict(state["data"])
    rng.restore(state["rng"], {"noise": gen2})
    assert state["step"] == 3
    assert_same(snapshot(*fresh), expected)
    assert (tmp_path / step_name(3)).is_file()
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def one_line_error(path, match, **kw):
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_files_are_one_line_errors(tmp_path):
    one_line_error(tmp_path / "nope.pt", "no checkpoint at")
    torch.save({"format": "hpcds-checkpoint", "version": 1, "step": 1,
                "model": {"w": torch.ones(2)}, "config": "{}", "ema": {}, "optimizer": {},
                "scheduler": {}, "data": {}, "rng": {}}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    msg = one_line_error(tmp_path / "cut.pt", "truncated or corrupt")
    assert "cut.pt" in msg
    (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    one_line_error(tmp_path / "garbage.pt", "truncated or corrupt")
    (tmp_path / "empty.pt").write_bytes(b"")
    one_line_error(tmp_path / "empty.pt", "truncated or corrupt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    one_line_error(tmp_path / "foreign.pt", "not an hpcds checkpoint")
    torch.save({"format": "hpcds-checkpoint", "version": 99}, tmp_path / "future.pt")
    one_line_error(tmp_path / "future.pt", "format version 99")
    torch.save({"format": "hpcds-checkpoint", "version": 1, "step": 1, "model": {},
                "config": "{}"}, tmp_path / "partial.pt")
    one_line_error(tmp_path / "partial.pt", "lacks ema, optimizer, scheduler, data, rng")
    assert load_checkpoint(tmp_path / "partial.pt", resume=False)["step"] == 1


def test_incompatible_model_config_names_the_key(make_cfg, overrides, capsys):
    cfg = make_cfg("training.steps=1")
    train(cfg, progress=False)
    # resume the same run_dir with a wider model: the CLI prints one line and exits 2
    code = main(["train", "tiny", *overrides, "training.steps=2", "model.hidden_dim=24",
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("hpcds: error: checkpoint ") and "does not fit this model" in err
    assert "shape" in err and "model.hidden_dim=16 there vs 24 here" in err

    # a corrupted latest.pt is refused the same way, not silently restarted
    latest = cfg.training.run_dir + "/" + LATEST
    with open(latest, "r+b") as f:
        f.truncate(1000)
    assert main(["train", "tiny", *overrides, "training.steps=2", "--quiet"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_resume_may_change_only_what_leaves_the_run_the_same():
    ckpt = to_yaml(load_config("tiny"))
    # extend the run, log/validate/checkpoint at other intervals, move it, other commands
    check_resumable(ckpt, to_yaml(load_config("tiny", [
        "training.steps=500", "training.log_every=1", "training.val_every=7",
        "training.checkpoint_every=3", "run.out_dir=elsewhere", "sampling.members=3",
        "model.backend=triton", "model.activation_checkpointing=true",
        "parallel.model_parallel=2"])), "latest.pt")
    for change in ("training.lr=0.001", "run.seed=1", "training.batch_size=2",
                   "diffusion.sigma_max=100", "data.variables=[2t]", "model.window=32"):
        key, value = change.split("=")
        with pytest.raises(CheckpointError, match=f"cannot be resumed with this config: "
                                                  f"{key}=.* there vs .* here"):
            check_resumable(ckpt, to_yaml(load_config("tiny", [change])), "latest.pt")
    # a key the checkpoint's config lacks comes from another hpcds version: not compared
    older = ckpt.replace("  grad_clip: 1.0\n", "")
    assert older != ckpt
    check_resumable(older, to_yaml(load_config("tiny", ["training.grad_clip=0.5"])), "x.pt")
