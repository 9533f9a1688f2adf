"""The differentiable exchanges over the raw ones (halo.py) and collectives (primitives.py).

hpcds::halo_exchange   a torch.library custom op: own rows (B, n_local, *F) → extended rows
                       (B, n_left + n_local + n_right, *F) (the peers' rows around ours);
                       its autograd formula is hpcds::halo_exchange_backward, the adjoint:
                       the halo rows' gradients travel back to their owners, which index_add
                       them into the rows they sent (a row can be sent to several peers).
AllReduceSum           forward: sum over the group; backward: identity. This is the rule for
                       a value reduced from per-shard partial sums (a loss, a normalisation
                       statistic) that every rank then uses identically: each rank's share of
                       the gradient is dL/dy itself, and the replicated weights' gradients
                       become the single-process gradient once summed over the group (see
                       verbs.py).

Why a custom op (and not an autograd.Function calling the transport): every halo exchange,
eager or compiled, forward or backward, runs here, inside the NVTX range "halo_exchange"; and
torch.compile (`model.compile`) sees one opaque op with a fake implementation instead of
point-to-point communication it cannot trace (dynamo graph-breaks on
`torch.distributed.batch_isend_irecv` and on mpi4py / the transports' Python), so a sharded
network compiles as ONE graph (fullgraph=True), forward and backward. That works because our
halos are frozen plans: the output's shape (B, plan.n_ext, *F) is known from the plan alone,
without looking at the data (anemoi-core's sharded mappers, whose halo sizes are
data-dependent, cannot do this; anemoi-core issue #1315). A custom op takes only tensors and
scalars, so the plan and its transport are passed as an int key into `_ROUTES`: a `HaloRoute`
(held by the module that exchanges, shared by its deep copies) registers itself there for as
long as it lives. The key is a constant of the compiled graph; each rank's differs (its own
plan), so every rank compiles its own graph.
"""

from __future__ import annotations

import itertools
import weakref

import torch

from hpcds.distributed import primitives as prim
from hpcds.distributed.halo import HaloPlan, gather_halo, scatter_halo_grad
from hpcds.observe import trace_range

Tensor = torch.Tensor

_ROUTES: "weakref.WeakValueDictionary[int, HaloRoute]" = weakref.WeakValueDictionary()
_KEYS = itertools.count(1)  # next() is atomic under the GIL: ranks run as threads in tests


class HaloRoute:
    """A frozen halo plan with the transport that moves its rows, under a process-unique int
    `key` (what the custom op receives). Frozen: deep copies (EMA) share it."""

    __slots__ = ("plan", "transport", "key", "__weakref__")

    def __init__(self, plan: HaloPlan, transport):
        self.plan, self.transport = plan, transport
        self.key = next(_KEYS)
        _ROUTES[self.key] = self

    def __deepcopy__(self, memo) -> "HaloRoute":
        return self


def _route(key: int) -> HaloRoute:
    route = _ROUTES.get(key)
    if route is None:
        raise RuntimeError(f"halo route {key} no longer exists (its module was deleted)")
    return route


@torch.library.custom_op("hpcds::halo_exchange", mutates_args=())
def _halo_exchange(x: Tensor, route: int) -> Tensor:
    r = _route(route)
    with trace_range("halo_exchange"):
        return gather_halo(x, r.plan, r.transport)  # a new tensor (torch.cat): no alias of x


@_halo_exchange.register_fake
def _(x, route):
    return x.new_empty((x.shape[0], _route(route).plan.n_ext) + tuple(x.shape[2:]))


@torch.library.custom_op("hpcds::halo_exchange_backward", mutates_args=())
def _halo_exchange_backward(grad_ext: Tensor, route: int) -> Tensor:
    r = _route(route)
    with trace_range("halo_exchange"):
        return scatter_halo_grad(grad_ext.contiguous(), r.plan, r.transport)


@_halo_exchange_backward.register_fake
def _(grad_ext, route):
    return grad_ext.new_empty((grad_ext.shape[0], _route(route).plan.n_local)
                              + tuple(grad_ext.shape[2:]))


def _setup_context(ctx, inputs, output):
    ctx.route = _route(inputs[1])  # a strong reference: the route outlives the backward


def _backward(ctx, grad_ext):
    return _halo_exchange_backward(grad_ext, ctx.route.key), None


_halo_exchange.register_autograd(_backward, setup_context=_setup_context)


def halo_exchange_op(x: Tensor, route: HaloRoute) -> Tensor:
    """x (B, n_local, *F) → (B, n_ext, *F) along route.plan (autograd; traceable)."""
    return _halo_exchange(x, route.key)


class AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        return prim.all_reduce_sum_(x.clone(), group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None
