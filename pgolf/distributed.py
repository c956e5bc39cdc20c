"""Process-group set-up and the few collectives the trainer needs (pipeline.md §7).

NCCL on CUDA, gloo on CPU. Gloo lacks AVG and the *_tensor collectives on some builds, so each
helper has a plain fallback with the same math (sum then divide; all-reduce then slice).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(prefer_cuda: bool = True) -> DistInfo:
    """Distributed means RANK and WORLD_SIZE are both set (torchrun); WORLD_SIZE must divide 8."""
    use_cuda = prefer_cuda and torch.cuda.is_available()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        if 8 % world:
            raise ValueError(f"WORLD_SIZE={world} must divide 8")
        if use_cuda:
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            device = torch.device("cpu")
            dist.init_process_group("gloo")
        dist.barrier()
        return DistInfo(rank, world, local, device)
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return DistInfo(0, 1, 0, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_nccl() -> bool:
    return dist.is_initialized() and dist.get_backend() == "nccl"


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class _Done:
    """Stand-in work handle for collectives that ran synchronously."""

    def wait(self) -> None:
        return None


def all_reduce_avg(t: torch.Tensor) -> None:
    if not dist.is_initialized():
        return
    if is_nccl():
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
    else:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())


def all_reduce_max(t: torch.Tensor) -> None:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)


def all_reduce_sum(t: torch.Tensor) -> None:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def reduce_scatter_avg(out: torch.Tensor, inp: torch.Tensor, async_op: bool = True):
    """out = mean over ranks of inp, this rank's equal slice along dim 0."""
    if is_nccl():
        return dist.reduce_scatter_tensor(out, inp, op=dist.ReduceOp.AVG, async_op=async_op)
    tmp = inp.float()
    all_reduce_avg(tmp)
    n = out.size(0)
    out.copy_(tmp[dist.get_rank() * n:(dist.get_rank() + 1) * n])
    return _Done()


def all_gather_into(out: torch.Tensor, inp: torch.Tensor, async_op: bool = True):
    if is_nccl():
        return dist.all_gather_into_tensor(out, inp, async_op=async_op)
    parts = list(out.chunk(dist.get_world_size(), dim=0))
    gathered = [torch.empty_like(inp) for _ in parts]
    dist.all_gather(gathered, inp.contiguous())
    for dst, src in zip(parts, gathered):
        dst.copy_(src)
    return _Done()
