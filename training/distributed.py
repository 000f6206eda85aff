"""DDP set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a plain single process otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Pick the device and, under torchrun, join the process group (NCCL on GPU, gloo on CPU).

    ``device``: auto, cpu or cuda. On GPU every rank uses ``cuda:LOCAL_RANK``.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown(*, finished: bool) -> None:
    """Leave the process group. After a finished run the ranks leave together (a barrier first): a rank that
    destroyed its group and exited while another still exchanged messages with it could abort the other at
    exit (seen once under load with gloo). After a failure no rank waits: the others may be blocked in a
    collective this rank will never join, and torchrun stops them."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks of a tensor of logging values (float64), in one collective and without a host sync."""
    values = values.double()
    if info.enabled:
        dist.all_reduce(values)
        values /= info.world_size
    return values


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank. DDP broadcasts them at the start of
    each forward, so after the last step each rank still holds statistics of its own last batch."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
