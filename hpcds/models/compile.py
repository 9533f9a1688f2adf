"""`model.compile`: the network F_θ under torch.compile (inductor, on CPU too), one place for
training (`hpcds.train.components.build_components`) and sampling
(`hpcds.ensemble.model.load_sampling_model`).

    compile_network(net, cfg.model)     # in place (nn.Module.compile), lazy: the first call
                                        # compiles, so sharding the net afterwards is fine

In place rather than `torch.compile(net)`: the module, its state_dict keys (no `_orig_mod.`)
and every reference to it (EDMPrecond, the optimizer, DeepSpeed) stay as they are. Deep copies
are eager: nn.Module drops `_compiled_call_impl` when copied, so the EMA copy (validation)
runs uncompiled.

fullgraph=True, also for a sharded network: every halo exchange is the custom op
hpcds::halo_exchange (hpcds/distributed/autograd.py), whose output shape follows from the
frozen plan alone, so dynamo traces the whole forward — halos, fused custom ops of the
`native`/`triton` backends, activation checkpointing — as one graph and AOTAutograd the
backward with it. Without that op, dynamo stops at the point-to-point exchange inside the
transport: `torch.distributed.P2POp` construction is refused ("P2P compilation is
disabled", torch 2.13, for the autograd.Function and the plain call alike; the experimental
TORCHDYNAMO_ENABLE_P2P_COMPILATION=1 traced it in a 2-rank gloo probe but left "unwaited
collective" warnings at exit), and mpi4py calls or the test's queue transport cannot be
traced at all. The custom op works for every transport. A graph break would be an
error here, not a silent fallback (tests/models/test_compile.py,
tests/distributed/test_compile_sharded.py).

Order of the exchanges: the compiled graph treats hpcds::halo_exchange as a pure op and
schedules it by data dependencies only. The network is a chain (each block's exchange needs
the previous block's output, and each adjoint the gradient that comes back through the
later blocks), so the dependencies order every exchange, forward and backward, and all ranks
(the same graph up to sizes) issue them in the same order — as the P = 2 tests check.

Shapes: dynamic=None (torch's default): the first shapes are compiled static; another batch
size recompiles once with a dynamic batch dimension. Each rank of a sharded model compiles
its own graph (its rows and halo plans differ). Autocast (bf16 on CUDA) and grad mode are
part of what is compiled: training, validation (no grad) and sampling each compile once.
"""

from __future__ import annotations

from torch import nn

from hpcds.config.schema import ModelConfig
from hpcds.errors import ConfigError


def compile_network(net: nn.Module, cfg: ModelConfig, backend: str = "inductor"
                    ) -> nn.Module:
    """net compiled in place when cfg.compile (fullgraph); unchanged otherwise. `backend`:
    torch.compile's (tests trace with "aot_eager": the same graphs, no code generation)."""
    if not cfg.compile:
        return net
    if backend == "inductor" and all(p.device.type == "cpu" for p in net.parameters()):
        _require_cpp_compiler()
    net.compile(backend=backend, fullgraph=True)
    return net


def _require_cpp_compiler() -> None:
    """Inductor's CPU code is C++ built at the first call: fail now, naming the key, rather
    than deep inside the first training step."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # private API moved: let inductor report it itself
        return
    try:
        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - any failure to find one is the same message
        raise ConfigError(f"model.compile=true on CPU needs a C++ compiler for inductor "
                          f"({' '.join(str(exc).split())[:120]}): install g++ or set "
                          "model.compile=false") from None
