"""Checkpoint files: the TrainState in a file (atomic), reading one back with a one-line error, the checks
`--resume` makes of every checkpoint it relies on, and the student-only export.

Resume policy (docs/reliability.md):
- latest.pth unreadable or not finite: refused, naming the file and the newest epoch snapshot to fall back on.
- best.pth unreadable, missing or holding another epoch than the history's best:
  repaired from latest.pth when the best epoch is the latest one (a kill between the two writes);
  otherwise, when best.pth is missing, the run goes on with one warning line (those weights are gone,
  best.pth is written again at the next improvement); when it is present but unreadable, the resume is
  refused: delete it to accept the loss, so a damaged file is never silently replaced.
- epoch_<n>.pth of the latest epoch unreadable or missing: repaired from latest.pth.
- A file is rebuilt only when the run's manifest vouches for it (or it is missing): bytes that changed since the run
  wrote them may be a user's file under the run's name, so the resume is refused instead, naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from makd.atomic_files import atomic_copy, atomic_write
from makd.engine import run_folder
from makd.engine.train_state import CheckpointError, TrainState, nonfinite_tensors

TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "rng", "config")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save through a temp file + os.replace, so a crash never leaves a truncated checkpoint."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def save_train_state(path: str | os.PathLike, state: TrainState) -> None:
    save_checkpoint(path, state.to_checkpoint())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict from `path`; CheckpointError (one line) when it is missing or cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # weights_only=False: our checkpoints hold RNG states and plain python metadata written by this project.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a makd checkpoint dict")
    return state


def student_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The student weights of a training checkpoint or a student export (both keep them under "model")."""
    if "model" not in state:
        raise CheckpointError("checkpoint holds no 'model' entry (not a makd training checkpoint or student export)")
    return state["model"]


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (all of TRAINING_KEYS) with finite weights, else one line saying why not."""
    state = load_checkpoint(path)
    missing = [key for key in TRAINING_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint (no {', '.join(missing)}); give latest.pth")
    bad = nonfinite_tensors(state["model"]) + nonfinite_tensors(state.get("distiller_extra", {}))
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({', '.join(bad[:3])})")
    return state


@dataclass
class ResumeCheck:
    """The outcome of checking a run folder's checkpoints for --resume (nothing is changed until `apply`)."""

    latest: dict[str, Any]
    repairs: list[str] = field(default_factory=list)  # run files to rewrite as copies of latest.pth
    warnings: list[str] = field(default_factory=list)  # one line each: what is lost or repaired

    def apply(self, run_dir: Path) -> None:
        for name in self.repairs:
            atomic_copy(run_dir / run_folder.LATEST, run_dir / name)


def _newest_snapshot(run_dir: Path) -> str:
    epochs = sorted(int(p.name[6:-4]) for p in run_dir.glob("epoch_*.pth") if p.name[6:-4].isdigit() and p.is_file())
    return run_folder.epoch_snapshot(epochs[-1]) if epochs else ""


def read_latest(run_dir: Path) -> dict[str, Any]:
    """latest.pth, or a one-line refusal that says what the run can fall back on."""
    try:
        return load_training_checkpoint(run_dir / run_folder.LATEST)
    except CheckpointError as err:
        snapshot = _newest_snapshot(run_dir)
        fallback = f"copy {snapshot} to latest.pth to continue from that epoch, or " if snapshot else ""
        raise CheckpointError(
            f"--resume: {err}; the run cannot continue from it: {fallback}start over with --overwrite"
        ) from None


def check_resume_files(
    run_dir: Path, latest: dict[str, Any], best_epoch: int | None, snapshot_freq: int, unvouched: tuple[str, ...] = ()
) -> ResumeCheck:
    """Check best.pth and the latest epoch snapshot against the history (see the module docstring). A file of
    `unvouched` (its bytes are not what the run's manifest recorded) is never rebuilt over: refused instead."""
    check = ResumeCheck(latest)
    epoch = int(latest["epoch"])

    def repair(name: str, why: str) -> None:
        if name in unvouched:
            raise CheckpointError(
                f"--resume: {run_dir / name} ({why}) would be rebuilt from {run_folder.LATEST}, but it changed since "
                "this run wrote it; nothing was changed: move it out if it is yours, or delete it to let --resume "
                "rebuild it"
            )
        check.repairs.append(name)
        check.warnings.append(f"{name} ({why}) rebuilt from {run_folder.LATEST} (both epoch {epoch})")

    def holds_epoch(name: str, wanted: int) -> tuple[bool, str]:
        path = run_dir / name
        if not path.exists():
            return False, "missing"
        try:
            state = load_training_checkpoint(path)
        except CheckpointError as err:
            return False, str(err)
        if int(state["epoch"]) != wanted:
            return False, f"it holds epoch {state['epoch']}, not {wanted}"
        return True, ""

    if best_epoch is not None:
        ok, why = holds_epoch(run_folder.BEST, best_epoch)
        if not ok and best_epoch == epoch:
            repair(run_folder.BEST, why)
        elif not ok and why == "missing":
            check.warnings.append(
                f"{run_folder.BEST} is missing: the weights of best epoch {best_epoch} are lost; it is written again "
                "at the next improvement"
            )
        elif not ok:
            raise CheckpointError(
                f"--resume: {run_dir / run_folder.BEST} is not the best epoch {best_epoch} ({why}) and cannot be "
                f"rebuilt; delete it to resume without those weights (it is written again at the next improvement), "
                "or start over with --overwrite"
            )
    if snapshot_freq and epoch % snapshot_freq == 0:
        name = run_folder.epoch_snapshot(epoch)
        ok, why = holds_epoch(name, epoch)
        if not ok:
            repair(name, why)
    return check
