"""torch.distributed setup for torchrun (one process per device); a no-op for a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from makd.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # A process group was joined: always with several processes, and with one under torchrun (below).
    group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.group


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR).

    `torchrun --nproc_per_node 1` joins a group of one too (as torchvision's reference scripts do), so one device
    runs the code path of many: the NCCL group, DDP, the reductions of evaluation; a plain `python` run (no
    MASTER_ADDR) does not.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not ("RANK" in os.environ and "MASTER_ADDR" in os.environ):
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device_kind))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, group=True)


def backend_for(device_kind: str) -> str:
    """The torch.distributed backend of a device kind: NCCL between CUDA devices, gloo on the CPU."""
    return "nccl" if device_kind == "cuda" else "gloo"


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """ "auto" -> this process's CUDA device when there is one, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"DEVICE {name!r} is unknown; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"DEVICE {name!r} asks for CUDA but no CUDA device is visible; set DEVICE cpu or auto")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"DEVICE {name!r}: there is no CUDA device {device.index} ({torch.cuda.device_count()} visible)"
            )
        torch.cuda.set_device(device)
    return device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over all processes (identity for a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_arrays(array, info: DistInfo) -> list:
    """Gather one picklable object per process, in rank order."""
    if not info.enabled:
        return [array]
    out = [None] * info.world_size
    dist.all_gather_object(out, array)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
