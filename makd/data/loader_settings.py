"""DataLoader settings chosen from the machine: worker count, prefetch depth, persistent workers, pinned memory.

DATASET.NUM_WORKERS -1 ("auto") takes the CPUs this process may run on (makd.data.cpu_threads.usable_cpus: its
affinity mask and cgroup CPU quota, not the machine's count), shares them among the processes of one node
(LOCAL_WORLD_SIZE under torchrun) and leaves one per process for the training loop itself; at most 8,
since one worker of the uint8 path already loads over a thousand cached images per second at 224 px
(docs/data.md). Results never depend on the count (per-sample seeds), so "auto" is safe to resume with.
"""

from __future__ import annotations

import os

from makd.data.cpu_threads import usable_cpus

MAX_AUTO_WORKERS = 8
# Batches each worker keeps ready. uint8 batches are a quarter of the former float ones, so 4 costs the
# memory 1 did, and it absorbs the jitter of decoding uncached JPEG/PNG files of different sizes.
PREFETCH_FACTOR = 4


def worker_count(requested: int) -> int:
    """DATASET.NUM_WORKERS as a number of worker processes: itself when >= 0, else the machine's share (above)."""
    if requested >= 0:
        return int(requested)
    per_process = usable_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


def loader_settings(requested_workers: int, pin_memory: bool, *, persistent: bool) -> dict:
    """DataLoader keyword arguments: workers, pinned memory (CUDA), prefetch depth and, when `persistent`,
    workers kept across epochs (the training loader: AspectDataset takes the epoch from its sampler's keys)."""
    workers = worker_count(requested_workers)
    settings = {
        "num_workers": workers,
        "pin_memory": bool(pin_memory),
        "persistent_workers": persistent and workers > 0,
    }
    if workers > 0:
        settings["prefetch_factor"] = PREFETCH_FACTOR
    return settings
