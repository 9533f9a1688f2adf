"""Learning-rate schedule, EMA and sample order against their formulas (no data needed)."""

import math

import pytest
import torch

from hpcds.config.schema import TrainingConfig
from hpcds.train.data import SampleOrder
from hpcds.train.ema import EMA, ema_decay_at
from hpcds.train.metrics import MetricsLog, read_metrics
from hpcds.train.schedule import WarmupCosine, lr_at


def expected_lr(s, lr, lr_min, warmup, steps):
    if s < warmup:
        return lr * (s + 1) / warmup
    p = min(1.0, (s - warmup) / (steps - warmup))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * p))


def test_warmup_then_cosine_matches_the_formula():
    cfg = TrainingConfig(lr=1e-3, lr_min=1e-5, warmup_steps=10, steps=50)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    sched = WarmupCosine(opt, cfg)
    seen = []
    for s in range(60):
        seen.append(opt.param_groups[0]["lr"])
        assert seen[-1] == pytest.approx(expected_lr(s, 1e-3, 1e-5, 10, 50), rel=1e-12)
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1e-4)  # the first step already learns
    assert seen[9] == pytest.approx(1e-3)  # end of warm-up: the peak
    assert seen[50] == pytest.approx(1e-5) and seen[59] == pytest.approx(1e-5)  # floor
    assert all(a >= b for a, b in zip(seen[9:], seen[10:]))  # monotone decay after the peak

    restored = WarmupCosine(opt, cfg)
    restored.load_state_dict({"step": 30})
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(30, 1e-3, 1e-5, 10, 50))
    assert restored.state_dict() == {"step": 30}


def test_no_warmup_starts_at_the_peak():
    assert lr_at(0, 2e-4, 0.0, 0, 100) == pytest.approx(2e-4)
    assert lr_at(50, 2e-4, 0.0, 0, 100) == pytest.approx(1e-4)


def test_ema_update_matches_the_formula():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=True)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        assert ema_decay_at(t, 0.9) == pytest.approx(d)
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())

    plain = EMA(model, decay=0.5, warmup=False)
    before = {k: v.clone() for k, v in plain.module.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    plain.update(model)
    torch.testing.assert_close(plain.module.weight, 0.5 * before["weight"] + 0.5 * model.weight)

    copy = EMA(torch.nn.Linear(3, 2), decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 30
    assert all(torch.equal(a, b) for a, b in zip(copy.module.parameters(),
                                                  ema.module.parameters()))


def test_ema_shares_non_persistent_buffers():
    model = torch.nn.Linear(2, 2)
    model.register_buffer("graph", torch.arange(5), persistent=False)
    model.register_buffer("stat", torch.zeros(2))
    ema = EMA(model, 0.99)
    assert ema.module.graph is model.graph  # constants are not duplicated
    model.stat.fill_(3.0)
    ema.update(model)
    assert torch.equal(ema.module.stat, model.stat) and ema.module.stat is not model.stat


def test_ema_of_a_bf16_model_is_float32_and_moves():
    """deepspeed.initialize casts the module to bf16 before the trainer makes the EMA: the
    average must still be float32, or at d = 0.999 the update (1 − d)·(p − e) — here 6e-5,
    below half a bf16 step (2⁻⁹ relative) of every weight — would be rounded away."""
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 32).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 1.0)  # [1, 2): bf16 step 2⁻⁷
    ema = EMA(model, decay=0.999, warmup=False)
    before = {k: v.clone() for k, v in ema.module.named_parameters()}
    assert {v.dtype for v in before.values()} == {torch.float32}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.0625)  # exact in bf16 at this range
    ema.update(model)
    for name, p in model.named_parameters():
        e, e0 = ema.module.get_parameter(name), before[name]
        torch.testing.assert_close(e, e0 + (1 - 0.999) * (p.float() - e0), rtol=1e-6, atol=0)
        assert bool((e > e0).all())  # every weight moved


def test_sample_order_is_seeded_and_resumes_mid_epoch():
    a = SampleOrder(7, seed=3)
    stream = a.take(5) + a.take(6) + a.take(4)  # crosses two epoch boundaries
    assert sorted(stream[:7]) == list(range(7)) and sorted(stream[7:14]) == list(range(7))
    b = SampleOrder(7, seed=3)
    b.take(5)
    b.take(6)
    state = b.state_dict()
    assert (state["epoch"], state["index"]) == (1, 4)
    c = SampleOrder(7, seed=3)
    c.load_state_dict(state)
    assert c.take(4) == stream[11:]
    assert SampleOrder(7, seed=4).take(7) != stream[:7]


def test_metrics_truncate_after_a_step(tmp_path):
    m = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        m.write({"kind": "train", "step": step, "loss": float(step)})
    with open(m.path, "a") as f:
        f.write('{"kind": "train", "st')  # a line cut short by a crash
    m.truncate_after(3)
    assert [r["step"] for r in read_metrics(m.path)] == [1, 2, 3]
    m.write({"kind": "val", "step": 4, "loss": float("nan")})
    assert read_metrics(m.path, kind="val")[0]["loss"] == "nan"
    m.truncate_after(0)
    assert read_metrics(m.path) == []
