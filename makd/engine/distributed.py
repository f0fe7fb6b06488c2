"""torch.distributed setup for torchrun (one process per device); a no-op for a single process."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from makd.errors import ConfigError, MakdError, one_line

T = TypeVar("T")


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


class AgreedError(MakdError):
    """A user error another process of the group met (see `agree`)."""


def agree(info: DistInfo, step: Callable[[], T]) -> T:
    """Run `step` on every process; when it raised a MakdError on any of them, every process raises one, so no
    process goes on to a collective the others never reach. Only rank 0 prints it (makd.errors.run_command), naming
    the rank that met it when that is not rank 0. Without torchrun: `step()`."""
    if not info.enabled:
        return step()
    error, result = None, None
    try:
        result = step()
    except MakdError as err:
        error = err
    message = None if error is None else one_line(error.args[0] if error.args else type(error).__name__)
    failed = [(rank, m) for rank, m in enumerate(all_gather_arrays(message, info)) if m is not None]
    if not failed:
        return result
    rank, first = failed[0]
    if error is not None and rank == info.rank:
        raise error
    raise AgreedError(first if rank == 0 else f"(rank {rank}) {first}")


# Set by `launch` for its workers: the number of processes, so that a worker's resume hint asks for as many.
LAUNCHED_PROCESSES = "MAKD_NPROC_PER_NODE"


def launch(script: str, args: Sequence[str], processes: int) -> int:
    """Run `script args` on `processes` processes of this machine with torchrun's own launcher, in this process, and
    return the exit code of the first process that failed (0 when all succeeded; 128 + N for signal N).

    Why not plain `torchrun`: when a worker exits with a user error (code 2), torchrun adds a Python traceback and a
    failure report of its own to the one line rank 0 printed. Here the launcher's report is not printed: the workers'
    one line (rank 0's, makd.errors.run_command) is the whole output. SIGTERM to this process reaches the workers
    (torchrun's agent forwards it), which keep their last finished epoch and print how to continue.
    """
    import logging

    # The launcher's own report and warnings: torch's elastic loggers take their level from LOGLEVEL when made.
    os.environ.setdefault("LOGLEVEL", "CRITICAL")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHED_PROCESSES] = str(processes)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several processes, without its warning
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={processes}", script, *args]))
    except ChildFailedError as err:
        code = err.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code if code < 0 else 1
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0
