"""`hpcds plan CONFIG --gpus N [--gpu-memory 80GB]`: will this configuration train on N GPUs?"""

from __future__ import annotations

import argparse
import json

from hpcds.cli.common import add_config_args, config_from_args
from hpcds.plan.memory import (GIB, USABLE_FRACTION, Plan, parse_memory, plan_layout,
                               smallest_fitting)


def register(commands) -> None:
    p = commands.add_parser(
        "plan", help="per-rank GPU memory and communication of a config on N GPUs",
        description="Estimate one training rank's GPU memory (weights, gradients, optimizer "
                    "state under ZeRO, EMA, activations with and without checkpointing, graph, "
                    "inputs, halo buffers) and the per-step communication (halo exchanges, "
                    "gradient all-reduce) of CONFIG on N GPUs = model_parallel x data_parallel, "
                    "name the largest term and say whether it fits, with the smallest GPU count "
                    "that does. Activations are counted on the real model run on PyTorch's meta "
                    "device at one shard's shapes (nothing is allocated). Example: "
                    "hpcds plan 4km --gpus 64 --gpu-memory 80GB")
    add_config_args(p)
    p.add_argument("--gpus", type=int, required=True, metavar="N",
                   help="GPUs in total: the model is sharded over N / data-parallel of them")
    p.add_argument("--gpu-memory", default="80GB", metavar="SIZE",
                   help="memory of one GPU, e.g. 80GB (H100), 141GB (H200), 96GiB; default 80GB")
    p.add_argument("--data-parallel", type=int, default=None, metavar="D",
                   help="data-parallel / ensemble groups (default: parallel.ensemble_groups)")
    p.add_argument("--no-search", action="store_true",
                   help="do not search for the smallest GPU count that fits (faster)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run_plan)


def _gib(n: int) -> str:
    return f"{n / GIB:8.2f} GiB"


def summary(plan: Plan) -> dict:
    """The figures of a plan as plain data (GiB rounded to 0.01)."""
    return {"gpus": plan.gpus, "model_parallel": plan.model_parallel,
            "data_parallel": plan.data_parallel, "parameters": plan.n_params,
            "shard": {"hr_rows": plan.shape.n_hr, "hidden_rows": plan.shape.n_hidden,
                      "edges": plan.shape.edges, "halo_rows": plan.shape.halo},
            "terms_gib": {k: round(v / GIB, 2) for k, v in plan.terms.items()},
            "total_gib": round(plan.total / GIB, 2), "largest": plan.largest,
            "activations_no_checkpointing_gib": round(plan.activations_no_ckpt / GIB, 2),
            "activations_checkpointing_gib": round(plan.activations_ckpt / GIB, 2),
            "checkpointing": plan.checkpointing,
            "activations_by_module_gib": {k: round(v / GIB, 2)
                                          for k, v in plan.activation_components.items()},
            "halo_gib_per_step": round(plan.halo_bytes_per_step / GIB, 4),
            "gradient_allreduce_gib_per_step": round(plan.grad_allreduce_bytes_per_step / GIB, 3),
            "gpu_memory_gib": round(plan.gpu_memory / GIB, 2), "fits": plan.fits}


def report(cfg_name: str, plan: Plan, smallest: Plan | None, searched: bool) -> str:
    s = plan.shape
    lines = [
        f"hpcds plan {cfg_name}: {plan.gpus} GPUs = {plan.model_parallel} model-parallel x "
        f"{plan.data_parallel} data-parallel, {plan.n_params / 1e6:.1f} M parameters",
        f"  shard: {s.n_hr:,} HR rows, {s.n_hidden:,} hidden rows, edges "
        + ", ".join(f"{g} {e:,}" for g, e in s.edges.items())
        + "; halo rows " + ", ".join(f"{k} {sum(v):,}" for k, v in s.halo.items()),
        "  memory per rank:"]
    for name, value in plan.terms.items():
        mark = "   <- largest" if name == plan.largest else ""
        lines.append(f"    {name:<22}{_gib(value)}{mark}")
    budget = USABLE_FRACTION * plan.gpu_memory
    lines += [
        f"    {'total':<22}{_gib(plan.total)}   of {budget / GIB:.1f} GiB usable "
        f"({USABLE_FRACTION:.0%} of {plan.gpu_memory / GIB:.1f} GiB)",
        f"  activations: {plan.activations_no_ckpt / GIB:.2f} GiB without checkpointing, "
        f"{plan.activations_ckpt / GIB:.2f} GiB with (incl. one recomputed block); "
        f"config: {'on' if plan.checkpointing else 'off'}; by module: "
        + ", ".join(f"{k} {v / GIB:.1f}" for k, v in sorted(
            plan.activation_components.items(), key=lambda kv: -kv[1]) if v >= GIB / 100),
        f"  communication per step and rank: halo {plan.halo_bytes_per_step / 2**20:.1f} MiB ("
        + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in plan.halo_by_kind.items())
        + f"), gradient all-reduce {plan.grad_allreduce_bytes_per_step / 2**20:.1f} MiB",
    ]
    if plan.fits:
        verdict = f"fits on {plan.gpus} GPUs"
    else:
        verdict = f"does not fit on {plan.gpus} GPUs (largest term: {plan.largest})"
    if searched:
        if smallest is None:
            verdict += "; no GPU count up to the search limit fits"
        else:
            verdict += (f"; the smallest that fits: {smallest.gpus} GPUs "
                        f"({smallest.model_parallel} x {smallest.data_parallel}, "
                        f"{smallest.total / GIB:.1f} GiB per rank)")
    lines.append(f"  verdict: {verdict}")
    return "\n".join(lines)


def run_plan(args: argparse.Namespace) -> int:
    args.quiet = True  # the resolved config is not what this command reports
    cfg = config_from_args(args)
    memory = parse_memory(args.gpu_memory)
    plan = plan_layout(cfg, args.gpus, memory, args.data_parallel)
    smallest = None if args.no_search else smallest_fitting(cfg, memory, args.data_parallel,
                                                            start=plan)
    if args.json:
        out = {"config": args.config, "plan": summary(plan),
               "smallest_fitting": summary(smallest) if smallest else None}
        print(json.dumps(out, indent=2))
    else:
        print(report(args.config, plan, smallest, not args.no_search))
    return 0
