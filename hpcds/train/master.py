"""Float32 master weights: which part of each parameter this rank holds, and the whole.

Without DeepSpeed a parameter is its own master (float32). Under DeepSpeed ZeRO 1/2 — and
its bf16 optimizer at stage 0 — the module's parameters are only the compute copies (bf16
when bf16 is enabled: `deepspeed.initialize` casts them), and the float32 masters live in the
optimizer, partitioned over the data-parallel ranks: rank r holds one contiguous range of
the flattened parameters. DeepSpeed links each parameter p to its range on this rank
(`deepspeed.utils.tensor_fragment`):

    p._hp_mapping.hp_fragment                  (n,) float32 view into the optimizer's partition
    p._hp_mapping.lp_fragment_address.start    where it starts in p.view(-1)
    p._hp_mapping is None                      no element of p lives on this rank
    p._dp_group                                the group the masters are partitioned over

(`deepspeed.utils.safe_get_full_fp32_param` reads the same links, with one all-reduce per
parameter; here all parameters share one.)

    slices = local_masters(net)          # [MasterSlice(index, start, values)] this rank holds
    assemble(net, fulls)                 # collective: every rank's slices → whole tensors
    state = master_state_dict(net)       # collective: net.state_dict() with float32 masters
    load_master_state(net, state)        # write a whole float32 state into module + masters
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpcds.distributed import primitives as prim


@dataclass(frozen=True)
class MasterSlice:
    index: int  # position in net.parameters()
    start: int  # first element of param.view(-1) that `values` holds
    values: torch.Tensor  # (n,) master of param.view(-1)[start:start + n]: float32 (a
    #                       parameter that is its own master keeps its dtype)


def _partitioned(p: torch.nn.Parameter) -> bool:
    return hasattr(p, "_hp_mapping")


def partitioned(net: torch.nn.Module) -> bool:
    """Whether some parameter's float32 master is split over ranks (DeepSpeed ZeRO)."""
    return any(_partitioned(p) for p in net.parameters())


def local_masters(net: torch.nn.Module) -> list[MasterSlice]:
    """This rank's float32 masters of net's floating-point parameters (views: they follow
    the optimizer's updates; read them again after a checkpoint load, which relinks)."""
    out = []
    for i, p in enumerate(net.parameters()):
        if not p.dtype.is_floating_point:
            continue
        if not _partitioned(p):
            out.append(MasterSlice(i, 0, p.detach().reshape(-1)))
        elif p._hp_mapping is not None:
            m = p._hp_mapping
            out.append(MasterSlice(i, int(m.lp_fragment_address.start), m.hp_fragment.detach()))
    return out


@torch.no_grad()
def assemble(net: torch.nn.Module, fulls: list[torch.Tensor]) -> None:
    """Collective over the masters' group (every rank, same order). fulls[i] (param i's
    shape, float32): correct on this rank's slices on entry, on all elements on return
    (partitioned parameters only: the others are whole on every rank already). One flat
    all-reduce per group: each element has exactly one non-zero contribution, so the sum is
    exact."""
    params = list(net.parameters())
    by_group: dict[int, tuple[object, list[int]]] = {}
    for i, p in enumerate(params):
        if p.dtype.is_floating_point and _partitioned(p):
            by_group.setdefault(id(p._dp_group), (p._dp_group, []))[1].append(i)
    if not by_group:
        return
    mine = {s.index: s for s in local_masters(net)}
    for group, indices in by_group.values():
        sizes = [params[i].numel() for i in indices]
        flat = torch.zeros(sum(sizes), dtype=torch.float32, device=fulls[indices[0]].device)
        offset = 0
        for i, n in zip(indices, sizes):
            s = mine.get(i)
            if s is not None:
                lo = s.start
                hi = lo + s.values.numel()
                flat[offset + lo:offset + hi] = fulls[i].view(-1)[lo:hi]
            offset += n
        prim.all_reduce_sum_(flat, group)
        offset = 0
        for i, n in zip(indices, sizes):
            fulls[i].view(-1).copy_(flat[offset:offset + n])
            offset += n


@torch.no_grad()
def master_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Collective (see `assemble`): net.state_dict() with every floating-point parameter
    replaced by its whole float32 master (buffers as they are)."""
    params = list(net.parameters())
    fulls = [torch.empty(p.shape, dtype=torch.float32, device=p.device)
             if p.dtype.is_floating_point else p.detach() for p in params]
    for s in local_masters(net):
        fulls[s.index].view(-1)[s.start:s.start + s.values.numel()] = s.values
    assemble(net, fulls)
    state = net.state_dict()
    for (name, _), full in zip(net.named_parameters(), fulls):
        state[name] = full
    return state


@torch.no_grad()
def load_master_state(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """net.load_state_dict(state), and this rank's float32 masters from the same float32
    values (DeepSpeed's optimizer would otherwise keep its old masters and write them back
    into the module at the next step)."""
    net.load_state_dict(state)
    names = [name for name, _ in net.named_parameters()]
    for s in local_masters(net):
        whole = state[names[s.index]].reshape(-1)
        s.values.copy_(whole[s.start:s.start + s.values.numel()])

