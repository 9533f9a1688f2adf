"""The loop learns: on a fixed draw of σ and noise, the training-date loss after ~60 steps is
below that of the initial weights (EDM and the deterministic regression); gradient
accumulation of 2 micro-batches equals one batch of 2."""

import pytest
import torch

from hpcds.checkpoint import load_model_weights
from hpcds.config.load import to_yaml
from hpcds.data.paired import PairedDataset
from hpcds.train import rng, train
from hpcds.train.components import build_components
from hpcds.train.data import TrainSamples, collate, prepare_normalisation, split_dates
from hpcds.train.trainer import accumulate_gradients
from hpcds.train.validation import fixed_draw_loss

FAST = ["training.steps=60", "training.lr=3e-3", "training.warmup_steps=5",
        "training.log_every=20"]


def train_samples(cfg):
    ds = PairedDataset.from_config(cfg)
    split = split_dates(ds, cfg.training.val_dates)
    prepare_normalisation(cfg, split, cfg.training.run_dir)
    return ds, TrainSamples(split.train)


def fixed_draw_train_loss(cfg, checkpoint=None):
    """Fixed-draw loss on the training dates of the initial (seeded) or trained weights."""
    ds, samples = train_samples(cfg)
    rng.seed_all(cfg.run.seed)  # as the trainer does: the same initial weights
    first = samples[0]
    comps = build_components(cfg, ds.hr_grid, first["target"].shape[1],
                             first["forcings"].shape[1])
    if checkpoint:
        load_model_weights(comps.net, checkpoint, to_yaml(cfg), use_ema=False)
    return fixed_draw_loss(comps.denoiser, comps.loss, samples, seed=11, draws=2, batch_size=4)


@pytest.mark.parametrize("deterministic", [False, True], ids=["edm", "regression"])
def test_training_lowers_the_fixed_draw_loss(make_cfg, deterministic):
    cfg = make_cfg(*FAST, f"diffusion.deterministic={str(deterministic).lower()}")
    before = fixed_draw_train_loss(cfg)
    summary = train(cfg, progress=False)
    after = fixed_draw_train_loss(cfg, summary["checkpoint"])
    assert summary["step"] == 60
    if deterministic:  # weighted MSE of the conditional mean: starts at 1 (zero output)
        assert before["loss"] == pytest.approx(1.0, abs=1e-3)
        assert after["loss"] < 0.9 * before["loss"]
        assert "loss_by_sigma" not in after
    else:
        assert after["loss"] < 0.98 * before["loss"]
        # learning shows where the conditioning matters: σ around and above σ_data
        mid = "0<=ln_sigma<2"
        assert after["loss_by_sigma"][mid] < before["loss_by_sigma"][mid]


def test_accumulating_two_micro_batches_equals_one_batch_of_two(make_cfg):
    cfg = make_cfg()
    ds, samples = train_samples(cfg)
    rng.seed_all(0)
    comps = build_components(cfg, ds.hr_grid, 5, samples[0]["forcings"].shape[1])
    with torch.no_grad():  # zero-initialised heads and gates: give every parameter a gradient
        for p in comps.net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())),
                   alpha=0.05)
    batch = collate([samples[0], samples[1]])
    gen = torch.Generator().manual_seed(5)
    batch["sigma"] = torch.tensor([0.3, 2.0])
    batch["noise"] = torch.randn(batch["target"].shape, generator=gen)

    def grads(micro_batches):
        comps.net.zero_grad(set_to_none=True)
        loss = accumulate_gradients(comps.denoiser, comps.loss, micro_batches, None,
                                    torch.device("cpu"))
        return loss, [p.grad.clone() for p in comps.net.parameters()]

    loss_one, g_one = grads([batch])
    halves = [{k: v[i:i + 1] for k, v in batch.items()} for i in (0, 1)]
    loss_two, g_two = grads(halves)
    torch.testing.assert_close(loss_two, loss_one, rtol=1e-6, atol=1e-7)
    assert sum(int(g.abs().sum() > 0) for g in g_one) == len(g_one)
    for a, b in zip(g_two, g_one):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
