"""Side by side: ECMWF anemoi-models 0.12.1 and hpcds's network at the same shapes, one CPU.

    bash scripts/setup_peers.sh && .venv-peers/bin/python perf/peer_anemoi.py --shape small --checkpoint both

Runs in the side venv .venv-peers (scripts/setup_peers.sh: torch 2.13.0 CPU, anemoi-models 0.12.1,
torch-geometric, hpcds without its heavy extras); the hpcds side alone (`--sides hpcds`) also
runs in .venv. Each (side, config) is measured in a fresh subprocess of this script (`--worker`),
so peak RSS is that network's alone; the parent interleaves the sides (anemoi first for one
config, hpcds first for the next) so load drift on a shared machine hits both alike.

Configs: `infer` = forward under no_grad; `ckpt-off` / `ckpt-on` = training forward (autograd
recording) and forward + backward (loss = mean(out²)), activation checkpointing off / on.
Median of `--repeats` after one warm-up; float32, batch 1, `--threads` torch threads.

Shapes (HR and hidden nodes are regular lat-lon boxes from 30°N, 0°E; the hidden grid is 4×
coarser per axis, so 16 HR nodes per hidden node; both networks get the SAME node order, the
SAME graphs (hpcds's kNN builders) and the same edge attributes [east, north, distance]):
    tiny   1,024 HR (32², 1°)      /    64 hidden (8², 4°)    window ±16
    small 16,384 HR (128², 0.25°)  / 1,024 hidden (32², 1°)   window ±256
    large 65,536 HR (256², 0.125°) / 4,096 hidden (64², 0.5°) window ±256
  encoder: every HR node sends to its 2 nearest hidden nodes → E_enc = 2·N_hr = 32 HR nodes per
           hidden node on average (hpcds encoder_knn = 32·N_hid/N_hr = 2; anemoi gets these edges)
  decoder: every HR node receives from its 3 nearest hidden nodes → E_dec = 3·N_hr
  window:  anemoi's TransformerProcessor window_size is a HALF-width: |i−j| ≤ 256, 513 keys;
           hpcds's model.window is the full width: window = 512 → the same 513 keys
  both:    128 channels, 4 heads, 4 processor layers, MLP ratio 4, qk-norm on (hpcds always
           qk-normalises; anemoi qk_norm=True), 5 variables + 4 forcings in, 5 out, no refiner
  anemoi:  GraphTransformerForwardMapper → TransformerProcessor (scaled_dot_product_attention:
           flash-attn does not run on CPU; anemoi then builds a dense N×N window mask and SDPA
           computes every logit) + its latent skip → GraphTransformerBackwardMapper, wired as
           AnemoiDiffusionModelEncProcDec.forward wires them; graph attention backend `pyg`
           (its triton path needs a GPU); noise conditioning as its diffusion model does it:
           RandomFourierEmbeddings(32) → MLP → noise_cond_dim (default 16, `--anemoi-cond-dim`),
           repeated per node, into ConditionalLayerNorm (zero-init) as the LayerNorm kernel;
           mapper num_chunks 1, processor num_chunks = layers (one checkpoint per layer, like
           hpcds). anemoi 0.12.1 checkpoints mappers and processor unconditionally (its
           constructors do not pass gradient_checkpointing on): ckpt-off sets the attribute.
  hpcds:   DownscalerNet (adaLN-Zero from a 128-wide noise embedding, per-sample not per-node),
           model.backend `--backend` (auto = native on CPU), refiner_layers 0.
Parameter counts differ mainly in the conditioning: hpcds's AdaLN maps 128 → 6–8 × 128 per
block; anemoi's ConditionalLayerNorm maps 16 → 2 × 128 per norm. Both totals and the counts
without the noise-conditioning layers are printed (those agree to 0.1 %: 1,224,709 anemoi,
1,223,565 hpcds; totals 1,287,221 and 1,941,901).

FLOPs: torch.utils.flop_counter.FlopCounterMode (matmul-class ops: mm, addmm, bmm, SDPA; the
per-edge graph attention is elementwise on both sides and not counted). anemoi's CPU SDPA op
(`_scaled_dot_product_flash_attention_for_cpu`) gets the SDPA formula registered here, so its
dense masked N×N is counted as executed. hpcds's native/triton ops are opaque to the counter,
so hpcds is counted on a reference-backend twin of the same network (its window attention:
slabs of 3W/2 keys per query). Roofline: a 4096² fp32 matmul timed in the same run
(`--matmul-size`); fraction = counted FLOPs / median time / that rate.

`--profile` (needs ckpt-off): after timing, torch.profiler tables of one forward and one
backward per side: per block (ranges opened by module hooks; backward ranges by identity
autograd markers on each block's inputs and outputs) and per op, top by self CPU time.
`--compile` adds a third side, `hpcds-c`: the same DownscalerNet under `model.compile`
(hpcds/models/compile.py: inductor, fullgraph, in place). Its first forward and first
forward+backward (trace, compile, one pass each) are timed apart and printed as the compile
time; the medians start after them. Its FLOPs are counted on the eager reference twin.
Memory: hpcds's workers keep freed heap memory for reuse as the `hpcds` CLI does
(hpcds/cpu_malloc.py: glibc mmap off, 1 GiB trim threshold: no page faults on each step's
fresh activations); anemoi's keep glibc's defaults unless `--anemoi-malloc`.
`--json OUT` writes every figure. No figure here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
# this checkout's hpcds, whichever venv runs the script (the peers venv may hold another's)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

from peer_profile import profile_passes  # noqa: E402  (perf/peer_profile.py)

SHAPES = {  # HR side × step, hidden side × step (degrees), window half-width (hidden nodes)
    "tiny": dict(hr=(32, 1.0), hidden=(8, 4.0), half_window=16),
    "small": dict(hr=(128, 0.25), hidden=(32, 1.0), half_window=256),
    "large": dict(hr=(256, 0.125), hidden=(64, 0.5), half_window=256),
}
C, HEADS, LAYERS, MLP_RATIO = 128, 4, 4, 4
HR_PER_HIDDEN_ENC, DEC_KNN = 32, 3  # encoder in-degree (mean), decoder k
N_VARS, N_FORCINGS = 5, 4
LAT0, LON0 = 30.0, 0.0
CONFIGS = {"infer": None, "ckpt-off": False, "ckpt-on": True}
COMPILED = "hpcds-c"  # `--compile`: DownscalerNet under model.compile (inductor, fullgraph)
HPCDS_SIDES = ("hpcds", COMPILED)


# ---------------------------------------------------------------- building the two networks
def _box(side: int, step: float) -> str:
    """N/W/S/E of a side×side box of `step` lattice points from (LAT0, LON0)."""
    span = (side - 1) * step
    return f"{LAT0 + span}/{LON0}/{LAT0}/{LON0 + span}"


def hpcds_graphs(shape: str, backend: str, checkpoint: bool, block_rows: int = 0):
    """(ModelConfig, ModelGraphs) of `shape`: hpcds's own config and graph builders."""
    from hpcds.config.schema import Backend, GridConfig, ModelConfig
    from hpcds.grids import make_grid
    from hpcds.models.graphs import build_model_graphs

    s = SHAPES[shape]
    (hr_side, hr_step), (hid_side, hid_step) = s["hr"], s["hidden"]
    hr_grid = make_grid(GridConfig(name=f"{hr_step}/{hr_step}", area=_box(hr_side, hr_step)))
    # the hidden lattice inside the HR box (MARS convention: multiples of its step)
    hidden = GridConfig(name=f"{hid_step}/{hid_step}", area=_box(hr_side, hr_step))
    n_hr, n_hid = hr_side ** 2, hid_side ** 2
    assert hr_grid.size == n_hr, (hr_grid.size, n_hr)
    enc_k = HR_PER_HIDDEN_ENC * n_hid // n_hr
    cfg = ModelConfig(hidden_dim=C, num_heads=HEADS, processor_layers=LAYERS,
                      window=2 * s["half_window"], mlp_ratio=float(MLP_RATIO),
                      hidden_grid=hidden, encoder_knn=enc_k, decoder_knn=DEC_KNN,
                      refiner_layers=0, backend=Backend(backend),
                      activation_checkpointing=bool(checkpoint), graph_block_rows=block_rows)
    graphs = build_model_graphs(cfg, hr_grid)
    assert graphs.n_hidden == n_hid, (graphs.n_hidden, n_hid)
    return cfg, graphs


def inputs(n_hr: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x_in, cond = (torch.randn(1, n_hr, N_VARS, generator=g) for _ in range(2))
    return x_in, cond, torch.randn(1, n_hr, N_FORCINGS, generator=g), torch.tensor([0.3])


class AnemoiPeer(nn.Module):
    """anemoi-models' own mappers and processor, wired as AnemoiDiffusionModelEncProcDec.forward
    does (0.12.1), minus its data-index / normaliser / multi-dataset plumbing:
    x_data = [x, y_noised, node attributes] → encoder (data → hidden, cond per node) →
    processor + latent skip → decoder (hidden → data, re-embedding x_data as destinations)."""

    def __init__(self, graphs, half_window: int, cond_dim: int, checkpoint: bool):
        super().__init__()
        from anemoi.models.layers.diffusion import RandomFourierEmbeddings
        from anemoi.models.layers.mapper import (GraphTransformerBackwardMapper,
                                                 GraphTransformerForwardMapper)
        from anemoi.models.layers.processor import TransformerProcessor

        kernels = {"LayerNorm": {"_target_": "anemoi.models.layers.normalization."
                                 "ConditionalLayerNorm", "condition_shape": cond_dim,
                                 "zero_init": True, "autocast": False}}
        in_data = 2 * N_VARS + N_FORCINGS  # x + y_noised + node attributes (forcings here)
        edge_dim = graphs.encoder_edge_attr.shape[1]
        common = dict(hidden_dim=C, num_chunks=1, num_heads=HEADS, mlp_hidden_ratio=MLP_RATIO,
                      edge_dim=edge_dim, qk_norm=True, layer_kernels=kernels,
                      graph_attention_backend="pyg")
        self.noise_embedder = RandomFourierEmbeddings(num_channels=32)
        self.noise_cond_mlp = nn.Sequential(nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, cond_dim))
        self.encoder = GraphTransformerForwardMapper(
            in_channels_src=in_data, in_channels_dst=graphs.hidden_features.shape[1], **common)
        self.processor = TransformerProcessor(
            num_layers=LAYERS, num_channels=C, num_chunks=LAYERS, num_heads=HEADS,
            mlp_hidden_ratio=MLP_RATIO, qk_norm=True,
            attention_implementation="scaled_dot_product_attention", window_size=half_window,
            layer_kernels=kernels)
        self.decoder = GraphTransformerBackwardMapper(
            in_channels_src=C, in_channels_dst=in_data, out_channels_dst=N_VARS, **common)
        for m in (self.encoder, self.processor, self.decoder):
            m.gradient_checkpointing = bool(checkpoint)
        self.register_buffer("hidden_attr", graphs.hidden_features, persistent=False)
        for name in ("encoder", "decoder"):
            s, r = getattr(graphs, f"{name}_senders"), getattr(graphs, f"{name}_receivers")
            self.register_buffer(f"{name}_index", torch.stack([s, r]).long(), persistent=False)
            self.register_buffer(f"{name}_attr", getattr(graphs, f"{name}_edge_attr"),
                                 persistent=False)

    def forward(self, x_in, cond, forcings, c_noise):
        import einops
        from anemoi.models.distributed.shapes import get_shard_shapes

        x_data = torch.cat([t.flatten(0, 1) for t in (x_in, cond, forcings)], dim=-1)
        noise = self.noise_cond_mlp(self.noise_embedder(c_noise[:, None]))  # (1, cond)
        # anemoi materialises the conditioning per node (einops.repeat in _make_noise_emb)
        c_data = einops.repeat(noise, "b c -> (b n) c", n=x_data.shape[0])
        c_hidden = einops.repeat(noise, "b c -> (b n) c", n=self.hidden_attr.shape[0])
        shapes_data = get_shard_shapes(x_data, 0)
        shapes_hidden = get_shard_shapes(self.hidden_attr, 0)
        x_data, x_latent = self.encoder(
            (x_data, self.hidden_attr), batch_size=1, shard_shapes=(shapes_data, shapes_hidden),
            edge_attr=self.encoder_attr, edge_index=self.encoder_index,
            keep_x_dst_sharded=True, cond=(c_data, c_hidden))
        x_proc = self.processor(x=x_latent, batch_size=1, shard_shapes=shapes_hidden,
                                cond=c_hidden) + x_latent
        return self.decoder(
            (x_proc, x_data), batch_size=1, shard_shapes=(shapes_hidden, shapes_data),
            edge_attr=self.decoder_attr, edge_index=self.decoder_index, x_src_is_sharded=True,
            cond=(c_hidden, c_data))


def build(side: str, shape: str, backend: str, checkpoint: bool, cond_dim: int,
          block_rows: int = 0):
    """(network, inputs, graph facts) for one side."""
    cfg, graphs = hpcds_graphs(shape, backend, checkpoint, block_rows)
    facts = {"n_hr": graphs.n_hr, "n_hidden": graphs.n_hidden,
             "encoder_edges": int(graphs.encoder_senders.numel()),
             "decoder_edges": int(graphs.decoder_senders.numel()),
             "encoder_knn": cfg.encoder_knn, "decoder_knn": cfg.decoder_knn,
             "window_half_width": SHAPES[shape]["half_window"]}
    if side in HPCDS_SIDES:
        from hpcds.models import DownscalerNet
        from hpcds.models.compile import compile_network

        net = DownscalerNet(cfg, N_VARS, N_FORCINGS, graphs)
        facts["hpcds_window"] = cfg.window
        if side == COMPILED:  # in place, lazy: the first call compiles (timed apart)
            compile_network(net, replace(cfg, compile=True))
    else:
        net = AnemoiPeer(graphs, SHAPES[shape]["half_window"], cond_dim, checkpoint)
        facts["anemoi_window_size"] = SHAPES[shape]["half_window"]
    return net.train(), inputs(graphs.n_hr), facts, (cfg, graphs)


CONDITIONING = ("AdaLN", "NoiseEmbedding", "ConditionalLayerNorm")


def param_counts(net: nn.Module) -> dict:
    """Total parameters and those outside the noise-conditioning layers (hpcds: AdaLN and the
    noise embedding; anemoi: ConditionalLayerNorm's scale/bias and the noise MLP)."""
    prefixes = [n + "." for n, m in net.named_modules()
                if type(m).__name__ in CONDITIONING or (n.startswith("noise") and "." not in n)]
    total = cond = 0
    for name, p in net.named_parameters():
        total += p.numel()
        cond += p.numel() if any(name.startswith(q) for q in prefixes) else 0
    return {"total": total, "conditioning": cond, "without_conditioning": total - cond}


# ---------------------------------------------------------------- measuring (worker side)
def _median(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, cached graph pieces
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 2**20


def _passes(net, x):
    def fwd():
        net(*x)

    def fwd_bwd():
        net(*x).square().mean().backward()
        net.zero_grad(set_to_none=True)
    return fwd, fwd_bwd


def _register_cpu_sdpa_flops() -> None:
    """FlopCounterMode has no formula for the CPU flash SDPA op anemoi's processor runs."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def fwd(q, k, v, *args, out_shape=None, **kwargs):  # arguments arrive as shapes
        return fc.sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, q, k, v)
    for op, formula in ((aten._scaled_dot_product_flash_attention_for_cpu, fwd),
                        (aten._scaled_dot_product_flash_attention_for_cpu_backward, bwd)):
        if op not in fc.flop_registry:
            fc.register_flop_formula(op)(formula)


def count_flops(net, x, grad: bool) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    fwd, fwd_bwd = _passes(net, x)
    out = {}
    with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
        fwd()
    out["fwd"] = counter.get_total_flops()
    if grad:
        with FlopCounterMode(display=False) as counter:
            fwd_bwd()
        out["fwd_bwd"] = counter.get_total_flops()
    return out


def worker(a) -> dict:
    torch.set_num_threads(a.threads)
    # hpcds as its CLI runs it: freed activations stay with malloc (hpcds/cpu_malloc.py);
    # anemoi with glibc's defaults unless --anemoi-malloc gives it the same setting
    if a.side in HPCDS_SIDES or a.anemoi_malloc:
        from hpcds.cpu_malloc import keep_freed_memory

        keep_freed_memory()
    checkpoint = CONFIGS[a.config]
    grad = checkpoint is not None
    net, x, facts, (cfg, graphs) = build(a.side, a.shape, a.backend, bool(checkpoint),
                                         a.anemoi_cond_dim, a.graph_block_rows)
    row = {"side": a.side, "config": a.config, "malloc_kept": a.side in HPCDS_SIDES or
           a.anemoi_malloc, **facts, "params": param_counts(net),
           "rss_built_gib": round(_rss_gib(), 3)}
    if a.side in HPCDS_SIDES:
        from hpcds.nn.dispatch import resolve

        row["backend"] = {op: resolve(op, a.backend) for op in
                          ("graph_attention", "window_attention", "modulated_layer_norm")}
    fwd, fwd_bwd = _passes(net, x)
    if a.side == COMPILED:
        # the first calls trace and compile (forward graph, then the backward's): their wall
        # time, one pass each included, is reported apart and never enters the medians
        t0 = time.perf_counter()
        with torch.set_grad_enabled(grad):
            fwd()
        row["compile_fwd_s"] = round(time.perf_counter() - t0, 2)
        if grad:
            t0 = time.perf_counter()
            fwd_bwd()
            row["compile_bwd_s"] = round(time.perf_counter() - t0, 2)
    with torch.set_grad_enabled(grad):
        row["fwd_s"] = _median(fwd, a.repeats)
    if grad:
        row["fwd_bwd_s"] = _median(fwd_bwd, a.repeats)
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    # after the peak is read: counting runs the network again (hpcds: a reference twin,
    # eager: the counter sees neither fused custom ops nor inductor's kernels)
    twin = net
    if a.side in HPCDS_SIDES and (a.backend != "reference" or a.side == COMPILED):
        from hpcds.config.schema import Backend
        from hpcds.models import DownscalerNet

        twin = DownscalerNet(replace(cfg, backend=Backend.reference), N_VARS, N_FORCINGS,
                             graphs).train()
    row["flops"] = count_flops(twin, x, grad)
    if a.profile and a.side != COMPILED:
        profile_passes(net, x, a.side, a.profile_rows)
    return row


# ---------------------------------------------------------------- the parent
def matmul_gflops(n: int, repeats: int, threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / _median(lambda: a @ b, repeats) / 1e9


def run_worker(a, side: str, config: str) -> dict:
    argv = [sys.executable, __file__, "--worker", "--side", side, "--config", config,
            "--shape", a.shape, "--threads", str(a.threads), "--repeats", str(a.repeats),
            "--backend", a.backend, "--anemoi-cond-dim", str(a.anemoi_cond_dim),
            "--profile-rows", str(a.profile_rows),
            "--graph-block-rows", str(a.graph_block_rows)]
    if a.anemoi_malloc:
        argv.append("--anemoi-malloc")
    if a.profile and config == "ckpt-off":
        argv.append("--profile")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    lines = p.stdout.splitlines()
    results = [ln for ln in lines if ln.startswith("RESULT ")]
    if p.returncode != 0 or not results:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"peer_anemoi: the {side} {config} worker failed (exit {p.returncode})")
    for ln in lines:  # profiler tables
        if not ln.startswith("RESULT "):
            print(ln)
    row = json.loads(results[-1][len("RESULT "):])
    row["worker_wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def _fmt_s(v):
    return f"{v:8.3f}" if v is not None else f"{'-':>8}"


def _ratio(x, y):
    return f"{x / y:6.2f}" if x and y else f"{'-':>6}"


def report(rows: list[dict], peak: float, a) -> None:
    by = {(r["side"], r["config"]): r for r in rows}
    configs = [c for c in CONFIGS if any(r["config"] == c for r in rows)]
    sides = [s for s in ("anemoi", *HPCDS_SIDES) if any(r["side"] == s for r in rows)]
    mine = [s for s in sides if s != "anemoi"] if "anemoi" in sides else []  # ratio columns
    f = rows[0]
    print(f"\nshape {a.shape}: {f['n_hr']:,} HR / {f['n_hidden']:,} hidden nodes, "
          f"E_enc {f['encoder_edges']:,} ({f['encoder_edges'] / f['n_hidden']:.0f} per hidden"
          f" node), E_dec {f['decoder_edges']:,} ({f['decoder_knn']} per HR node), window "
          f"±{f['window_half_width']}; float32, batch 1, {a.threads} thread(s), median of "
          f"{a.repeats}; load average {os.getloadavg()[0]:.2f}")
    for s in sides:
        r = next(r for r in rows if r["side"] == s)
        p = r["params"]
        extra = f", ops {r['backend']}" if s in HPCDS_SIDES else ""
        print(f"  {s:<7} parameters {p['total']:>10,} (without noise conditioning "
              f"{p['without_conditioning']:,}; conditioning {p['conditioning']:,}); RSS once "
              f"built {r['rss_built_gib']:.2f} GiB{extra}")
    for c in configs:
        if (COMPILED, c) in by:
            r = by[(COMPILED, c)]
            print(f"  {COMPILED} {c}: first calls (trace + compile + one pass) forward "
                  f"{r['compile_fwd_s']:.1f} s, forward+backward {r.get('compile_bwd_s', 0):.1f} s")
    print(f"  matmul {a.matmul_size}² fp32: {peak:.1f} GFLOP/s (the roofline below)\n")
    head = "".join(f" | {s:<7}  fwd s  fwd+bwd s  peak GiB" for s in sides)
    ratio = "".join(f" | anemoi/{s:<7} fwd   f+b   RSS" for s in mine)
    print(f"{'config':<9}{head}{ratio}")
    for c in configs:
        line = f"{c:<9}"
        for s in sides:
            r = by[(s, c)]
            line += (f" | {'':<6}{_fmt_s(r['fwd_s'])}  {_fmt_s(r.get('fwd_bwd_s'))}"
                     f"  {r['peak_rss_gib']:8.2f}")
        for s in mine:
            ra, rh = by[("anemoi", c)], by[(s, c)]
            line += (f" | {'':<10}{_ratio(ra['fwd_s'], rh['fwd_s'])}"
                     f"{_ratio(ra.get('fwd_bwd_s'), rh.get('fwd_bwd_s'))}"
                     f"{_ratio(ra['peak_rss_gib'], rh['peak_rss_gib'])}")
        print(line)
    print(f"\n{'config':<9} {'side':<7} {'pass':<8} {'GFLOP':>9} {'GFLOP/s':>9} {'of peak':>8}")
    for c in configs:
        for s in sides:
            r = by[(s, c)]
            for key, label in (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd")):
                if key in r["flops"] and r.get(f"{key}_s"):
                    gf = r["flops"][key] / 1e9
                    rate = gf / r[f"{key}_s"]
                    print(f"{c:<9} {s:<7} {label:<8} {gf:9.2f} {rate:9.1f} {rate / peak:8.1%}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--checkpoint", choices=["off", "on", "both"], default="both")
    p.add_argument("--backend", choices=["auto", "native", "reference", "triton"],
                   default="auto", help="hpcds's model.backend")
    p.add_argument("--sides", default="anemoi,hpcds", help="comma-separated: anemoi, hpcds")
    p.add_argument("--graph-block-rows", type=int, default=0,
                   help="hpcds's model.graph_block_rows: its graph blocks' destination rows "
                        "in pieces of this many (0: all at once, the default)")
    p.add_argument("--anemoi-malloc", action="store_true",
                   help="give anemoi's workers hpcds's malloc setting too (hpcds/cpu_malloc.py)")
    p.add_argument("--compile", action="store_true",
                   help=f"also hpcds under model.compile (inductor) as side {COMPILED!r}")
    p.add_argument("--no-infer", action="store_true", help="skip the no_grad forward config")
    p.add_argument("--anemoi-cond-dim", type=int, default=16,
                   help="anemoi's noise_cond_dim (its DiffusionSchema default: 16)")
    p.add_argument("--matmul-size", type=int, default=None,
                   help="the roofline matmul's n (default 4096; 1024 at --shape tiny)")
    p.add_argument("--json", metavar="OUT", help="write every figure here")
    p.add_argument("--profile", action="store_true",
                   help="profiler tables per block and per op (ckpt-off run)")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return 0
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    if not sides or set(sides) - {"anemoi", "hpcds"}:
        p.error("--sides takes anemoi, hpcds or both")
    sides += [COMPILED] if a.compile else []
    if a.profile and a.checkpoint == "on":
        p.error("--profile profiles the ckpt-off run: use --checkpoint off or both")
    configs = ([] if a.no_infer else ["infer"]) + {
        "off": ["ckpt-off"], "on": ["ckpt-on"], "both": ["ckpt-off", "ckpt-on"]}[a.checkpoint]
    a.matmul_size = a.matmul_size or (1024 if a.shape == "tiny" else 4096)
    peak = matmul_gflops(a.matmul_size, min(a.repeats, 5), a.threads)
    rows = []
    for i, config in enumerate(configs):
        order = sides if i % 2 == 0 else sides[::-1]  # interleaved: alternate who goes first
        rows += [run_worker(a, side, config) for side in order]
    report(rows, peak, a)
    if a.json:
        from machine import machine_info  # perf/machine.py

        Path(a.json).write_text(json.dumps(
            {"command": " ".join(sys.argv), "shape": a.shape, "threads": a.threads,
             "repeats": a.repeats, "backend": a.backend,
             "graph_block_rows": a.graph_block_rows, "matmul_size": a.matmul_size,
             "matmul_gflops": peak, "machine": machine_info(), "rows": rows}, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
