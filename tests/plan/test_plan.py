"""`hpcds plan`: the activation count on the meta device against measured CPU runs of the real
model, the memory terms' arithmetic, and the CLI's verdicts."""

from __future__ import annotations

import dataclasses
import gc
import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from hpcds.cli.main import main as hpcds_main
from hpcds.config.load import load_config
from hpcds.data.forcings import FORCING_NAMES
from hpcds.errors import ConfigError
from hpcds.grids import make_grid
from hpcds.models import DownscalerNet, build_model_graphs
from hpcds.nn import dispatch
from hpcds.plan.activations import (GRAPHS, ShardShape, count_activations, fused_ops,
                                    param_count, run_counted)
from hpcds.plan.memory import GIB, halo_rows, parse_memory, plan_layout

V, F = 5, len(FORCING_NAMES)
# small enough for 2 cores: HR 0.125° Alps (5,145 cells), hidden 0.25° (~1,300 nodes)
SMALL = ["model.hidden_dim=32", "model.num_heads=4", "model.window=32",
         "model.processor_layers=3", "model.hidden_grid.name=0.25/0.25"]


@pytest.fixture(scope="module")
def small():
    cfg = load_config("tiny", SMALL)
    hr = make_grid(cfg.grid.hr)
    return cfg, hr, build_model_graphs(cfg.model, hr)


def _shape(graphs, batch: int) -> ShardShape:
    edges = {g: getattr(graphs, f"{g}_senders").numel() for g in GRAPHS
             if hasattr(graphs, f"{g}_senders")}
    return ShardShape(graphs.n_hr, graphs.n_hidden, edges, batch=batch)


def _measured_forward_bytes(net, n_hr: int, batch: int) -> int:
    """Memory the CPU allocator still holds after a forward pass with grad (what autograd
    keeps for backward, plus the output), from torch.profiler's memory events."""
    x = torch.randn(batch, n_hr, V)
    cond, forcings, c_noise = torch.randn(batch, n_hr, V), torch.randn(batch, n_hr, F), \
        torch.randn(batch)
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = net(x, cond, forcings, c_noise)
    held = sum(e.self_cpu_memory_usage for e in prof.events())
    assert out.requires_grad
    return held - out.numel() * out.element_size()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_within_20_percent_of_measured(small, checkpointing):
    cfg, hr, graphs = small
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(cfg.model, activation_checkpointing=checkpointing)
    net = DownscalerNet(model_cfg, V, F, graphs)
    measured = _measured_forward_bytes(net, hr.size, batch=2)
    plain, ckpt = count_activations(cfg.model, V, F, _shape(graphs, 2), torch.float32)
    estimate = (ckpt if checkpointing else plain).total
    assert measured > 2 * 2**20  # a real measurement (several (2, 5145, 32) tensors), not noise
    assert abs(estimate - measured) <= 0.2 * measured, (estimate, measured)
    if checkpointing:
        # every block's activations are dropped (input embedding and head included): only
        # their inputs and the noise and hidden embeddings' stay
        assert ckpt.total < 0.1 * plain.total
        assert set(ckpt.by_component) >= {"encoder", "processor", "decoder", "refiner"}
        assert 0 < ckpt.recompute_bytes < plain.total


def _measured_training_peak_bytes(net, n_hr: int, batch: int) -> int:
    """Peak of the memory the CPU allocator holds during a forward and backward pass (from
    the profiler's allocation records, in time order), parameter gradients preallocated."""
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    x, cond = torch.randn(batch, n_hr, V), torch.randn(batch, n_hr, V)
    forcings, c_noise = torch.randn(batch, n_hr, F), torch.randn(batch)
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = net(x, cond, forcings, c_noise)
        out.backward(torch.ones_like(out))
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None or not hasattr(results, "events"):
        pytest.skip("this torch's profiler exposes no allocation records")
    records = sorted((e.start_ns(), e.nbytes()) for e in results.events()
                     if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in records:
        held += nbytes
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("rows", [0, 1024])
def test_checkpointed_training_peak_within_20_percent_of_measured(small, rows):
    """With every block checkpointed, the backward holds the kept inputs plus one recomputed
    block at a time: the plan's 'activations with checkpointing' (kept + the largest block)
    is the measured peak of a forward + backward pass, and adding the backward workspace
    bounds it from above. rows > 0 (model.graph_block_rows): a recomputed graph block holds
    its source side and one piece of its destination rows."""
    cfg, hr, graphs = small
    model_cfg = dataclasses.replace(cfg.model, graph_block_rows=rows)
    torch.manual_seed(0)
    net = DownscalerNet(dataclasses.replace(model_cfg, activation_checkpointing=True), V, F,
                        graphs)
    measured = _measured_training_peak_bytes(net, hr.size, batch=2)
    plain, ckpt = count_activations(model_cfg, V, F, _shape(graphs, 2), torch.float32)
    print(f"rows {rows}: estimate {(ckpt.total + ckpt.recompute_bytes) / 2**20:.2f} MiB, "
          f"measured {measured / 2**20:.2f} MiB")
    estimate = ckpt.total + ckpt.recompute_bytes
    assert measured > 10 * 2**20
    assert abs(estimate - measured) <= 0.2 * measured, (estimate, measured)
    assert estimate + 2 * ckpt.largest_tensor >= measured
    blocks = {k: b for k, b in plain.by_block.items() if k.split(".")[0] in (
        "input_embedding", "encoder", "processor", "decoder", "refiner", "head")}
    assert ckpt.recompute_bytes == max(blocks.values())
    if rows == 0:  # the largest checkpointed block is the refiner's (8 HR neighbours each)
        assert ckpt.recompute_bytes == blocks["refiner.0"]
    else:  # pieces are recomputed one at a time, with or without block checkpointing
        assert 0 < plain.piece_bytes <= ckpt.recompute_bytes
        assert plain.recompute_bytes == plain.piece_bytes
    assert ckpt.largest_tensor == plain.largest_tensor


def test_counter_on_the_real_model_equals_the_meta_count(small):
    cfg, hr, graphs = small
    net = DownscalerNet(cfg.model, V, F, graphs)
    real = run_counted(net, hr.size, 1, False, torch.float32, torch.device("cpu"))
    plain, _ = count_activations(cfg.model, V, F, _shape(graphs, 1), torch.float32)
    assert abs(real.total - plain.total) <= 0.01 * real.total


def test_fused_kernels_save_less_than_the_reference(small):
    cfg, _, graphs = small
    ref, _ = count_activations(cfg.model, V, F, _shape(graphs, 1), torch.float32)
    fused, _ = count_activations(cfg.model, V, F, _shape(graphs, 1), torch.float32, fused=True)
    assert fused.total < 0.8 * ref.total


def test_only_ops_with_a_fused_kernel_count_as_fused(small, monkeypatch):
    """An op counts as fused only where the backend registers a kernel for it: a backend that
    fuses graph attention and the LayerNorm but not the window attention (as `native` did
    before the fused window attention) keeps the reference's logits in a processor block, the
    graph blocks save what a fused kernel saves. Counting the window attention as fused without
    a kernel made the 4km plan 2.5x lower than an H200 measured
    (perf/results/gpu-20261204-h200.md)."""
    cfg, _, graphs = small
    assert fused_ops("native") == fused_ops("triton") == frozenset(dispatch.OPS)
    assert fused_ops("reference") == frozenset()
    monkeypatch.setitem(dispatch._REGISTRY, "window_attention",
                        {"reference": dispatch._REGISTRY["window_attention"]["reference"]})
    partial = fused_ops("native")
    assert partial == {"graph_attention", "modulated_layer_norm", "gated_linear", "rms_norm"}
    shape = _shape(graphs, 1)
    ref, _ = count_activations(cfg.model, V, F, shape, torch.float32)
    every, _ = count_activations(cfg.model, V, F, shape, torch.float32, fused=True)
    no_window, _ = count_activations(cfg.model, V, F, shape, torch.float32, fused=partial)
    ln_only, _ = count_activations(cfg.model, V, F, shape, torch.float32,
                                   fused=frozenset({"modulated_layer_norm", "gated_linear",
                                                    "rms_norm"}))
    # a processor block: logits as the reference (its LayerNorms fused as every op's)
    assert no_window.by_block["processor.0"] == ln_only.by_block["processor.0"]
    assert no_window.by_block["processor.0"] > 1.5 * every.by_block["processor.0"]
    # a graph block: as fully fused
    assert no_window.by_block["encoder"] == every.by_block["encoder"] < ref.by_block["encoder"]


def test_param_count_is_the_real_models(small):
    cfg, _, graphs = small
    net = DownscalerNet(cfg.model, V, F, graphs)
    assert param_count(cfg.model, V, F) == sum(p.numel() for p in net.parameters())


def test_memory_terms_arithmetic():
    cfg = load_config("o96_o320", ["parallel.use_deepspeed=true", "parallel.zero_stage=2",
                                   "parallel.ensemble_groups=4"])
    plan = plan_layout(cfg, 8, parse_memory("80GB"))
    n = plan.n_params
    assert (plan.model_parallel, plan.data_parallel) == (2, 4)
    assert plan.terms["weights"] == 2 * n  # bf16, replicated below ZeRO-3
    assert plan.terms["gradients"] == 2 * n // 4  # ZeRO-2 shards gradients over D = 4
    assert plan.terms["optimizer state"] == 12 * n // 4  # m, v, fp32 master over D
    assert plan.shape.n_hr == 421_120 // 2
    assert plan.shape.halo["window"] == (128, 128)  # W/2 from each neighbour
    assert plan.grad_allreduce_bytes_per_step == int(2 * 7 / 8 * n * 2)  # ring over 8 ranks
    assert plan.total == sum(plan.terms.values())


def test_halo_estimate_against_measured_o2560_shards():
    # perf/results/graph-o2560-20261124.md, O2560 HR / O1280 hidden, 16 shards, k = 4:
    # decoder halo 3,292-5,878 hidden rows (mean 4,462), encoder 8,315-17,817 HR rows
    # (mean 13,701)
    n_hr, n_hid = 26_306_560, 6_599_680
    dec = halo_rows(4, n_hid, n_hid, n_hid // 16, 16)
    enc = halo_rows(4, n_hr, n_hid, n_hr // 16, 16)
    assert 0.8 * 4462 <= dec <= 1.4 * 4462 and dec >= 0.7 * 5878
    assert 0.8 * 13701 <= enc <= 1.4 * 13701 and enc >= 0.7 * 17817
    assert halo_rows(4, n_hid, n_hid, n_hid, 1) == 0  # one shard: no halo


def test_parse_memory():
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("96GiB") == 96 * 2**30
    assert parse_memory("141") == 141 * 10**9
    with pytest.raises(ConfigError):
        parse_memory("lots")


def test_plan_cli_verdicts(capsys):
    assert hpcds_main(["plan", "o96_o320", "--gpus", "1", "--no-search"]) == 0
    out = capsys.readouterr().out
    assert "verdict: fits on 1 GPUs" in out and "<- largest" in out
    assert hpcds_main(["plan", "o96_o320", "--gpus", "1", "--gpu-memory", "4GB",
                       "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert not data["plan"]["fits"] and data["plan"]["largest"] == "activations"
    best = data["smallest_fitting"]
    assert best["fits"] and best["gpus"] > 1
    assert best["total_gib"] <= 0.9 * 4e9 / GIB
    smaller = plan_layout(load_config("o96_o320"), best["gpus"] - 1, parse_memory("4GB"))
    assert not smaller.fits  # it is the smallest


def test_plan_cli_user_errors(capsys):
    assert hpcds_main(["plan", "o96_o320", "--gpus", "3", "--data-parallel", "2"]) == 2
    assert "not a multiple" in capsys.readouterr().err
    assert hpcds_main(["plan", "o96_o320", "--gpus", "2", "--gpu-memory", "big"]) == 2
