"""Per-rank GPU memory and per-step communication of a configuration on N GPUs.

Layout: N = P · D ranks; each model instance is sharded over P ranks (contiguous SFC ranges
of the HR and hidden nodes), D data-parallel / ensemble groups (default: the config's
`parallel.ensemble_groups`). Weights are replicated on all N ranks, so gradients are summed
over all N; ZeRO shards optimizer state (stage ≥ 1), gradients (≥ 2) and weights (3) over the
D data-parallel ranks.

Terms per rank (bytes):
  weights, gradients   n_params × 2 (bf16, DeepSpeed) or × 4 (float32 + autocast)
  optimizer            AdamW m, v float32 (8 B/param) + float32 master weights under bf16 (4)
  ema                  the trainer's float32 EMA copy (4 B/param), replicated
  activations          saved for backward, counted on the real model (`activations.py`);
                       with checkpointing (every encoder/processor/decoder/refiner block):
                       the blocks' inputs and the rest that stays alive + the largest block,
                       recomputed in backward ("activation recompute")
  backward workspace   2 × the largest saved tensor (its gradient and its input's gradient;
                       with checkpointing, the largest of a recomputed block too)
  graph                the shard's index tensors, edge attributes and hidden features
                       (the model's buffers at the shard's shapes)
  inputs               x, cond, target (V each) and forcings (F) float32 for the shard's cells
  halo buffers         send + receive buffers of the largest halo exchange
Halo rows per shard: W/2 from each neighbour for window attention; for a graph, the source
nodes within the kNN reach r = √(k/π) node spacings of the shard's boundary, whose length is
4κ√n nodes for a shard of n nodes (κ = HALO_COMPACTNESS, checked against measured O2560
shards in perf/results/graph-o2560-*.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from hpcds.config.schema import HpcdsConfig
from hpcds.data.forcings import FORCING_NAMES
from hpcds.errors import ConfigError
from hpcds.grids import grid_point_count
from hpcds.nn import GraphAttentionBlock, WindowAttentionBlock
from hpcds.plan.activations import (GRAPHS, ShardShape, build_meta_model, count_activations,
                                    fused_ops, graph_edge_counts, param_count)

GIB = 2**30
# κ: boundary length of an SFC shard / that of a square of equal area. Measured on the O2560
# HR / O1280 hidden shards of perf/bench_graph.py (P = 16, k = 4): decoder halo 3,292-5,878
# hidden rows (mean 4,462), κ = 1.5 gives 4,347; encoder 8,315-17,817 HR rows (mean 13,701),
# κ = 1.5 gives 17,326.
HALO_COMPACTNESS = 1.5
USABLE_FRACTION = 0.9  # of GPU memory: the rest for the CUDA context, NCCL, fragmentation


def parse_memory(text: str) -> int:
    """"80GB" (10⁹ B), "80GiB" (2³⁰ B), "80" (GB) → bytes; ConfigError otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(GB|GiB|TB|TiB|MB|MiB)?\s*", str(text),
                         re.IGNORECASE)
    if not match:
        raise ConfigError(f"bad GPU memory {text!r}: expected e.g. 80GB, 141GB or 96GiB")
    unit = (match.group(2) or "GB").lower()
    scale = {"gb": 1e9, "gib": 2**30, "tb": 1e12, "tib": 2**40, "mb": 1e6, "mib": 2**20}[unit]
    return int(float(match.group(1)) * scale)


@dataclass
class Plan:
    """One layout's figures; `terms` in bytes per rank (insertion order = report order)."""

    gpus: int
    model_parallel: int
    data_parallel: int
    n_params: int
    shape: ShardShape
    terms: dict[str, int]
    activations_no_ckpt: int  # saved for backward without checkpointing
    activations_ckpt: int  # checkpointing every block: what stays alive + the largest block
    checkpointing: bool
    halo_bytes_per_step: int
    grad_allreduce_bytes_per_step: int
    halo_by_kind: dict[str, int] = field(default_factory=dict)
    activation_components: dict[str, int] = field(default_factory=dict)  # top-level modules
    gpu_memory: int = 0

    @property
    def total(self) -> int:
        return sum(self.terms.values())

    @property
    def largest(self) -> str:
        return max(self.terms, key=self.terms.get)

    @property
    def fits(self) -> bool:
        return self.total <= USABLE_FRACTION * self.gpu_memory


def _shard_rows(n: int, p: int) -> int:
    return -(-n // p)  # the largest shard (ceil)


def halo_rows(k: int, n_src_total: int, n_knn_total: int, n_src_shard: int, P: int) -> int:
    """Source rows a shard receives for a kNN graph (see the module docstring)."""
    if P == 1:
        return 0
    reach = math.sqrt(k / math.pi) * math.sqrt(n_src_total / n_knn_total)  # source spacings
    return int(math.ceil(4 * HALO_COMPACTNESS * math.sqrt(n_src_shard) * reach))


def shard_shape(cfg: HpcdsConfig, P: int, batch: int | None = None) -> ShardShape:
    """Rows, edges and halo rows of the largest of P shards."""
    m = cfg.model
    totals = {"hr": grid_point_count(cfg.grid.hr), "hidden": grid_point_count(m.hidden_grid)}
    n_hr, n_hid = _shard_rows(totals["hr"], P), _shard_rows(totals["hidden"], P)
    local = {"hr": n_hr, "hidden": n_hid}
    edges = graph_edge_counts(m, n_hr)
    halo = {"window": (min(m.window // 2, n_hid), min(m.window // 2, n_hid)) if P > 1
            else (0, 0)}
    for graph in edges:
        src, _, k_field, knn_set = GRAPHS[graph]
        rows = halo_rows(int(getattr(m, k_field)), totals[src], totals[knn_set], local[src], P)
        halo[graph] = (rows // 2, rows - rows // 2)
    return ShardShape(n_hr=n_hr, n_hidden=n_hid, edges=edges, halo=halo,
                      batch=batch or cfg.training.batch_size)


def plan_layout(cfg: HpcdsConfig, gpus: int, gpu_memory: int, data_parallel: int | None = None,
                n_params: int | None = None, shape: ShardShape | None = None) -> Plan:
    """The memory terms and communication of `cfg` on `gpus` ranks (`shape`: one shard's rows,
    edges and halos if not the largest of the config's own P shards, e.g. a scaled-down one)."""
    D = int(data_parallel or cfg.parallel.ensemble_groups or 1)
    if gpus < 1 or D < 1 or gpus % D:
        raise ConfigError(f"--gpus {gpus} is not a multiple of the data-parallel degree {D} "
                          f"(parallel.ensemble_groups or --data-parallel)")
    P = gpus // D
    m, par = cfg.model, cfg.parallel
    V, F = len(cfg.data.variables), len(FORCING_NAMES)
    bf16 = bool(par.use_deepspeed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    w_bytes = 2 if bf16 else 4
    fused = fused_ops(m.backend)  # ops without a kernel for this backend count as the reference
    shape = shape or shard_shape(cfg, P)
    n_params = n_params or param_count(m, V, F)
    zero = par.zero_stage if par.use_deepspeed else 0

    plain, ckpt = count_activations(m, V, F, shape, dtype, fused=fused)
    act = ckpt if m.activation_checkpointing else plain
    meta = build_meta_model(m, V, F, shape, dtype)
    graph_bytes = sum(b.untyped_storage().nbytes() for b in meta.buffers())
    C, B = m.hidden_dim, shape.batch
    halo_rows_max = max(sum(lr) for lr in shape.halo.values())
    terms = {
        "weights": n_params * w_bytes // (D if zero >= 3 else 1),
        "gradients": n_params * w_bytes // (D if zero >= 2 else 1),
        "optimizer state": n_params * (8 + (4 if bf16 else 0)) // (D if zero >= 1 else 1),
        "ema weights": n_params * 4,
        "activations": act.total,
        "activation recompute": act.recompute_bytes,
        "backward workspace": 2 * act.largest_tensor,
        "graph": graph_bytes,
        "inputs": B * shape.n_hr * (3 * V + F) * 4,
        "halo buffers": 2 * B * halo_rows_max * C * w_bytes,
    }
    # communication per step: every halo row is received once forward and its gradient sent
    # back once in backward; checkpointed blocks (all of them) exchange again when recomputed
    passes = 3 if m.activation_checkpointing else 2
    per_block: dict[str, int] = {}
    for name, module in meta.named_modules():
        if isinstance(module, WindowAttentionBlock):
            key = "window"
        elif isinstance(module, GraphAttentionBlock):
            key = name.split(".")[0]
        else:
            continue
        rows = sum(shape.halo.get(key, (0, 0)))
        per_block[key] = per_block.get(key, 0) + passes * B * rows * C * w_bytes
    N = gpus
    grad = int(2 * (N - 1) / N * n_params * w_bytes) if N > 1 else 0
    return Plan(gpus=gpus, model_parallel=P, data_parallel=D, n_params=n_params, shape=shape,
                terms=terms, activations_no_ckpt=plain.total,
                activations_ckpt=ckpt.total + ckpt.recompute_bytes,
                checkpointing=bool(m.activation_checkpointing),
                halo_bytes_per_step=sum(per_block.values()), halo_by_kind=per_block,
                grad_allreduce_bytes_per_step=grad, gpu_memory=gpu_memory,
                activation_components=dict(act.by_component))


def smallest_fitting(cfg: HpcdsConfig, gpu_memory: int, data_parallel: int | None = None,
                     start: Plan | None = None, max_model_parallel: int = 4096) -> Plan | None:
    """The plan with the fewest GPUs (P · D, D fixed) that fits, or None up to P = max.
    Memory falls monotonically with P: doubling from `start`'s P, then bisection."""
    D = int(data_parallel or cfg.parallel.ensemble_groups or 1)
    n_params = start.n_params if start else param_count(
        cfg.model, len(cfg.data.variables), len(FORCING_NAMES))
    cache: dict[int, Plan] = {start.model_parallel: start} if start else {}

    def at(P: int) -> Plan:
        if P not in cache:
            cache[P] = plan_layout(cfg, P * D, gpu_memory, D, n_params)
        return cache[P]

    P = start.model_parallel if start else 1
    if at(P).fits:  # lo: largest known not to fit (0: none)
        lo, hi = 0, P
        while hi > 1 and at(hi // 2).fits:
            hi //= 2
        lo = hi // 2
    else:
        lo, hi = P, 2 * P
        while not at(hi).fits:
            if hi >= max_model_parallel:
                return None
            lo, hi = hi, min(2 * hi, max_model_parallel)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).fits:
            hi = mid
        else:
            lo = mid
    return at(hi)
