"""Seeding and RNG state capture: a run is a function of (config, SEED)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def use_deterministic_algorithms(device: torch.device) -> None:
    """DETERMINISTIC: deterministic kernels only (an op that has none stops the run with torch's error naming it).

    On CUDA two more settings are needed for exact reruns and an exact `--resume`: cuBLAS is deterministic only
    with a fixed workspace configuration, read from CUBLAS_WORKSPACE_CONFIG before its first use (set here to
    ":4096:8" unless the user set it; torch refuses deterministic cuBLAS calls without it), and cuDNN must not pick
    its algorithms by timing them (`cudnn.benchmark`, off by default, turned off here).
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of one epoch on one rank. Reseeding at every epoch start makes an epoch's data order
    and augmentation independent of what ran before, which is what makes `--resume` exact."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**31 - 1)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
