"""Distributed data parallel from ``torchrun``'s environment, and a plain process without it.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous
address); :func:`setup` then joins the process group (NCCL on GPUs, gloo on CPU). Without those
variables, or with ``WORLD_SIZE=1``, nothing is initialised and the model is never wrapped. A process
group that the caller already initialised (tests use ``file://``) is used as it is.

Only rank 0 writes files and logs; every rank computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False  # in a process group even with one process (``train.ddp: always``)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.joined


def _pick_device(preference: str, local_rank: int) -> torch.device:
    """``train.device``: "auto" is this process's GPU, else the CPU (training does not use MPS)."""
    from ramir.devices import resolve_device

    return resolve_device(preference, local_rank=local_rank, allow_mps=False)


def setup(device_preference: str = "auto", *, always: bool = False) -> tuple[DistEnv, torch.device, bool]:
    """Join the process group described by the environment (if any) and choose this rank's device.

    ``always``: under ``torchrun`` join the group and wrap in DDP even with one process, so that a
    one-GPU run exercises the very path (NCCL, DDP hooks) that a many-GPU run takes.
    Returns the environment, the device and whether this call created the process group (and so
    should destroy it when training ends).
    """
    owned = False
    joined = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        joined = always
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        under_torchrun = "MASTER_ADDR" in os.environ and "RANK" in os.environ
        if world > 1 or (always and under_torchrun and dist.is_available()):
            device = _pick_device(device_preference, local_rank)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
            owned = True
            joined = world == 1
    device = _pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistEnv(rank, world, local_rank, joined), device, owned


def wrap(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` when running on several processes.

    Call *after* freezing: DDP registers only parameters that require a gradient, so frozen layers
    are neither synchronised nor expected to receive gradients, and ``find_unused_parameters=False``
    (no per-step graph traversal) is correct as long as every trainable parameter is used.
    """
    if not env.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True if ``flag`` is set on any rank (so a signal seen by one rank stops all of them together)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if not env.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world_size


def broadcast_object(obj, env: DistEnv, src: int = 0):
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(env: DistEnv, owned: bool) -> None:
    """Leave the process group if :func:`setup` created it."""
    if owned and env.distributed and dist.is_initialized():
        dist.destroy_process_group()
