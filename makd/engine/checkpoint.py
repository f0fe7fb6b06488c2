"""Checkpoint files: atomic writes, full training state, and a student-only export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from makd.atomic_files import atomic_write


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save through a temp file + os.replace, so a crash never leaves a truncated checkpoint."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # weights_only=False: our checkpoints hold RNG states and plain python metadata written by this project.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None


def student_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The student weights of a training checkpoint or a student export (both keep them under "model")."""
    if "model" not in state:
        raise ValueError("checkpoint holds no 'model' entry (not a makd training checkpoint or student export)")
    return state["model"]
