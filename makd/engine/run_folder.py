"""The run folder: the one list of the files a training run writes, and the only way a run folder is cleared.

Every writer of the trainer names its file through the constants below, so this list cannot fall
behind what is written. `--overwrite` removes exactly these entries, and only after the new run's
config and data checks passed; a folder holding anything else (the user's data, the config file
given, `OUTPUT_DIR .`) is refused with one line naming what is foreign, and nothing is removed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from makd.errors import MakdError

CONFIG = "config.yaml"  # the resolved config (written once the run or the resume is accepted)
LATEST = "latest.pth"  # the full training state after the last finished epoch
BEST = "best.pth"  # a copy of latest.pth of the selected best epoch
STUDENT = "student.pth"  # the student-only export, written at the end
SUMMARY = "summary.json"  # the final metrics, written last
METRICS = "metrics.jsonl"  # one row per finished epoch (RunLogger)
TENSORBOARD = "tensorboard"  # folder of TensorBoard event files (RunLogger)
WANDB_ID = "wandb_id.txt"  # the wandb run id, so --resume continues the same wandb run (RunLogger)
WANDB = "wandb"  # wandb's own folder (wandb.init(dir=run_dir))
ASPECT_METRICS = "aspect_metrics.json"  # per-question teacher/student metrics of the final student
DETECTIONS = "detections_test.json"  # TASK detection: the final model's test detections (COCO results)
CATEGORY_AP = "category_ap.json"  # TASK detection: per-category AP of the final model
PLOTS = "plots"  # tools/plot.py's default output: figures of this run, stale once the run is replaced
RUN_FILES = (CONFIG, LATEST, BEST, STUDENT, SUMMARY, METRICS, WANDB_ID, ASPECT_METRICS, DETECTIONS, CATEGORY_AP)
RUN_FOLDERS = (TENSORBOARD, WANDB, PLOTS)
_EPOCH_SNAPSHOT = re.compile(r"epoch_(\d+)\.pth")
# makd.atomic_files.atomic_write's temp files (".<name>.<random>.tmp"), left behind only by a kill mid-write.
_TEMP_FILE = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp")
_TENSORBOARD_EVENTS = re.compile(r"events\.out\.tfevents\..+")


class RunFolderError(MakdError):
    """The run folder cannot be used as asked (holds another run, foreign files, nothing to resume)."""


def epoch_snapshot(epoch: int) -> str:
    """File name of the every-SAVE_CHECKPOINT_FREQ snapshot of `epoch` (1-based)."""
    return f"epoch_{epoch}.pth"


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or _EPOCH_SNAPSHOT.fullmatch(name) is not None


def is_run_entry(path: Path) -> bool:
    """Whether `path` (an entry of a run folder) is something this trainer writes."""
    name = path.name
    if path.is_dir() and not path.is_symlink():
        if name == TENSORBOARD:
            return all(p.is_file() and _TENSORBOARD_EVENTS.fullmatch(p.name) for p in path.iterdir())
        return name in (WANDB, PLOTS)
    temp = _TEMP_FILE.fullmatch(name)
    return _is_run_file(name) or (temp is not None and _is_run_file(temp.group("name")))


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Temp files of interrupted atomic writes of run files (safe to delete: the target is the old or no file)."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _TEMP_FILE.fullmatch(p.name) and is_run_entry(p))


@dataclass
class RunFolderPlan:
    """What a run will do to its folder; `inspect_run_folder` decides it, `commit` does it (main process only)."""

    run_dir: Path
    resume: bool
    to_remove: list[Path] = field(default_factory=list)  # previous run's entries (--overwrite)

    def commit(self, config_yaml: str) -> None:
        """Remove what --overwrite replaces, then write config.yaml: call only after every check passed."""
        from makd.atomic_files import atomic_write_text

        for path in self.to_remove:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        for path in stale_temp_files(self.run_dir):
            path.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / CONFIG, config_yaml)


def inspect_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> RunFolderPlan:
    """Check the run folder against --resume / --overwrite without changing anything; one line on refusal."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; pass one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file; set OUTPUT_DIR to a folder")
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    foreign = [p for p in entries if not is_run_entry(p)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise RunFolderError(
            f"run folder {run_dir} holds {foreign[0].name}{more}, which this trainer did not write; nothing was "
            "changed: set OUTPUT_DIR (or EXPERIMENT.NAME) to a new or empty folder"
        )
    latest = run_dir / LATEST
    if resume:
        if not latest.is_file():
            raise RunFolderError(f"--resume: no checkpoint {latest} to continue from; drop --resume to start")
        return RunFolderPlan(run_dir, resume=True)
    holds_run = latest.exists() or (run_dir / SUMMARY).exists()
    if holds_run and not overwrite:
        raise RunFolderError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to start "
            "over, or set OUTPUT_DIR / EXPERIMENT.NAME"
        )
    # Without a checkpoint nothing of value is there (config.yaml, an empty log): a new run replaces it.
    return RunFolderPlan(run_dir, resume=False, to_remove=entries)
