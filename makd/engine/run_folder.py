"""The run folder: the names of the files a training run writes, its lock, and the only way it is cleared.

Every writer of the trainer names its file through the constants below, and every write is recorded in the
folder's manifest (makd.engine.run_manifest). A new run, `--overwrite` and `--resume` touch only what the manifest
vouches for (written by this trainer or a recording tool, unchanged since); anything else is foreign and the run is
refused in one line naming it, before anything changes. `--overwrite` removes the previous run's entries only after
the new run's config and data checks passed.

One writer at a time: the trainer holds an exclusive lock on the folder (`.makd.lock` inside it) for the whole run;
a second trainer, or a tool writing into the folder, stops at once naming the holder. A run refused before it
starts leaves the folder as it was: a folder it had to create is removed again.

Run folders written before the manifest existed (makd 0.2 and earlier) hold no manifest.json: their files cannot be
told from a user's by name alone, so a new run or `--overwrite` there is refused; `--resume` continues them when
every entry has a name the old trainer wrote, and starts the manifest by adopting those files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from makd.atomic_files import atomic_write_text, file_sha256, missing_folders
from makd.engine.run_manifest import MANIFEST, TRAINER, Entry, RunManifest, Version
from makd.errors import EnvironmentFailure, MakdError, blocking_file, describe_os_error, is_environment_error
from makd.file_lock import ExclusiveLock

CONFIG = "config.yaml"  # the resolved config (written once the run or the resume is accepted)
LATEST = "latest.pth"  # the full training state after the last finished epoch
BEST = "best.pth"  # a copy of latest.pth of the selected best epoch
STUDENT = "student.pth"  # the student-only export, written at the end
SUMMARY = "summary.json"  # the final metrics, written last
METRICS = "metrics.jsonl"  # one row per finished epoch (RunLogger)
INPUTS = "inputs.json"  # the fingerprints of every input file and the world size (makd.engine.run_inputs)
TENSORBOARD = "tensorboard"  # folder of TensorBoard event files (RunLogger)
WANDB_ID = "wandb_id.txt"  # the wandb run id, so --resume continues the same wandb run (RunLogger)
WANDB = "wandb"  # wandb's own folder (wandb.init(dir=run_dir))
ASPECT_METRICS = "aspect_metrics.json"  # per-question teacher/student metrics of the final student
DETECTIONS = "detections_test.json"  # TASK detection: the final model's test detections (COCO results)
CATEGORY_AP = "category_ap.json"  # TASK detection: per-category AP of the final model
PLOTS = "plots"  # where tools/plot.py wrote by default before it got a folder of its own (docs/studies.md)
LOCK_FILE = ".makd.lock"  # the trainer's exclusive lock (makd.file_lock), removed when the run ends
RUN_FILES = (
    CONFIG, LATEST, BEST, STUDENT, SUMMARY, METRICS, INPUTS, WANDB_ID, ASPECT_METRICS, DETECTIONS, CATEGORY_AP,
)  # fmt: skip
RUN_FOLDERS = (TENSORBOARD, WANDB)
_EPOCH_SNAPSHOT = re.compile(r"epoch_(\d+)\.pth")
# makd.atomic_files.atomic_write's temp files (".<name>.<random>.tmp"), left behind only by a kill mid-write.
_TEMP_FILE = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp")
_TENSORBOARD_EVENTS = re.compile(r"events\.out\.tfevents\..+")
ADOPTED = "adopted on --resume (written before makd kept a manifest)"


class RunFolderError(MakdError):
    """The run folder cannot be used as asked (holds another run, foreign files, nothing to resume)."""


def epoch_snapshot(epoch: int) -> str:
    """File name of the every-SAVE_CHECKPOINT_FREQ snapshot of `epoch` (1-based)."""
    return f"epoch_{epoch}.pth"


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or _EPOCH_SNAPSHOT.fullmatch(name) is not None


def is_run_entry(path: Path) -> bool:
    """Whether `path` (an entry of a run folder) has a name the trainer writes (the rule for folders without a
    manifest; see the module docstring)."""
    name = path.name
    if path.is_dir() and not path.is_symlink():
        if name == TENSORBOARD:
            return all(p.is_file() and _TENSORBOARD_EVENTS.fullmatch(p.name) for p in path.iterdir())
        return name == WANDB
    temp = _TEMP_FILE.fullmatch(name)
    return _is_run_file(name) or name == MANIFEST or (temp is not None and _is_run_file(temp.group("name")))


def _is_stale_temp(name: str, manifest: RunManifest | None) -> bool:
    """A temp file of an interrupted atomic write of a run file or of the manifest (safe to delete: its target is
    the old file or none)."""
    temp = _TEMP_FILE.fullmatch(name)
    if temp is None:
        return False
    target = temp.group("name")
    return _is_run_file(target) or target == MANIFEST or (manifest is not None and target in manifest.entries)


def stale_temp_files(run_dir: Path, manifest: RunManifest | None = None) -> list[Path]:
    """Temp files of interrupted atomic writes of run files (safe to delete: the target is the old or no file)."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.is_file() and _is_stale_temp(p.name, manifest))


def _first_foreign(manifest: RunManifest, name: str) -> str | None:
    """`name` if the manifest does not vouch for it; for a folder, the first file inside it does not vouch for."""
    path = manifest.run_dir / name
    if manifest.vouches(name):
        return None
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.iterdir()):
            found = _first_foreign(manifest, f"{name}/{child.name}")
            if found is not None:
                return found
    return name


def _is_checkpoint(name: str) -> bool:
    return name in (LATEST, BEST) or _EPOCH_SNAPSHOT.fullmatch(name) is not None


def _trainer_owns(name: str) -> bool:
    """Whether the trainer writes or reads `name` (a top-level entry or a path inside one)."""
    top = name.split("/", 1)[0]
    return _is_run_file(top) or top in RUN_FOLDERS or top == MANIFEST


# ------------------------------------------------------------------------------------------------- the lock
@dataclass
class RunFolderLock:
    """The exclusive lock of a run folder, creating the folder for it when needed; `release` removes the lock file
    and, unless `keep_folder`, the folders it created (a refused run leaves nothing behind)."""

    run_dir: Path
    what: str = ""
    created: list[Path] = field(default_factory=list)
    lock: ExclusiveLock | None = None

    def acquire(self) -> RunFolderLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunFolderError(f"run folder {self.run_dir} is a file; set OUTPUT_DIR to a folder")
        self.created = missing_folders(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = blocking_file(self.run_dir) or self.run_dir.parent
            raise RunFolderError(
                f"run folder {self.run_dir} cannot be written: {blocker} is a file, not a folder (ENOTDIR); set "
                "OUTPUT_DIR (or LOG.PREFIX) to a folder path"
            ) from None
        except OSError as err:
            if is_environment_error(err):
                raise EnvironmentFailure(describe_os_error(err, self.run_dir, "create the run folder")) from None
            raise
        try:
            self.lock = ExclusiveLock(self.run_dir / LOCK_FILE, self.what or f"run folder {self.run_dir}").acquire()
        except BaseException:
            self._remove_created()
            raise
        return self

    def release(self, keep_folder: bool = True) -> None:
        if self.lock is not None:
            self.lock.release(remove=True)
            self.lock = None
        if not keep_folder:
            self._remove_created()

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a run that wrote something keeps its folder
        self.created = []


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, what: str = "") -> Iterator[RunFolderLock]:
    """Hold a run folder's lock for the block (the folder must exist: tools write only into existing runs)."""
    lock = RunFolderLock(Path(run_dir), what).acquire()
    try:
        yield lock
    finally:
        lock.release()


def enclosing_run_folder(path: str | os.PathLike) -> Path | None:
    """The run folder holding `path` (itself or an ancestor with a manifest.json), if any."""
    path = Path(os.path.abspath(path))
    for candidate in [path, *path.parents]:
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


@contextlib.contextmanager
def recording_into_run_folder(out_dir: str | os.PathLike, writer: str) -> Iterator[Path | None]:
    """For a tool writing into `out_dir`: when that lies in a run folder, hold the run's lock (no trainer may clear or
    resume it meanwhile) and record every file written there in its manifest as `writer`'s, so a later `--overwrite`
    removes them as the run's and never takes a user's file for one. Yields the run folder, or None."""
    run_dir = enclosing_run_folder(out_dir)
    if run_dir is None:
        yield None
        return
    with run_folder_lock(run_dir, f"run folder {run_dir}"):
        manifest = RunManifest.read(run_dir)
        with manifest.recording(writer):
            yield run_dir


# ------------------------------------------------------------------------------------------------- the plan
@dataclass
class RunFolderPlan:
    """What a run will do to its folder; `inspect_run_folder` decides it, `commit` does it (main process only)."""

    run_dir: Path
    resume: bool
    manifest: RunManifest | None = None  # None: a new manifest is started at commit
    to_remove: list[Path] = field(default_factory=list)  # previous run's entries (--overwrite)
    adopt: list[str] = field(default_factory=list)  # entries of a folder without manifest, adopted on --resume
    # --resume: checkpoints the manifest does not vouch for; read and checked, but never rebuilt over
    unvouched_checkpoints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line each, printed when the run starts

    def commit(self, config_yaml: str) -> RunManifest:
        """Remove what --overwrite replaces, start or adopt the manifest, then write config.yaml: call only after
        every check passed. Returns the manifest that records the run's writes from here on."""
        for path in self.to_remove:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        manifest = self.manifest if self.manifest is not None and not self.to_remove else RunManifest(self.run_dir)
        for path in stale_temp_files(self.run_dir, manifest):
            path.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in self.adopt:
            _adopt(manifest, name)
        manifest.save()
        with manifest.recording(TRAINER):
            atomic_write_text(self.run_dir / CONFIG, config_yaml)
        return manifest


def _adopt(manifest: RunManifest, name: str) -> None:
    """Record an entry of a run folder without manifest (its name is one the old trainer wrote) as the run's."""
    path = manifest.run_dir / name
    if path.is_dir() and not path.is_symlink():
        if name == WANDB:
            manifest.entries[name] = Entry(ADOPTED, "folder")
            return
        for child in sorted(path.iterdir()):
            _adopt(manifest, f"{name}/{child.name}")
        return
    stat = path.stat()
    manifest.entries[name] = Entry(ADOPTED, "file", [Version(stat.st_size, file_sha256(path), stat.st_mtime_ns)])


def _listing(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name != LOCK_FILE)


def _foreign_line(run_dir: Path, foreign: list[str], why: str = "") -> str:
    more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
    return (
        f"run folder {run_dir} holds {foreign[0]}{more}, which this trainer did not write{why}; nothing was "
        "changed: move it out, or set OUTPUT_DIR (or EXPERIMENT.NAME) to a new or empty folder"
    )


def inspect_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> RunFolderPlan:
    """Check the run folder against --resume / --overwrite without changing anything; one line on refusal."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; pass one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file; set OUTPUT_DIR to a folder")
    entries = _listing(run_dir)
    manifest = RunManifest.read(run_dir) if run_dir.is_dir() else None
    plan = RunFolderPlan(run_dir, resume=resume, manifest=manifest)
    if manifest is None:
        _inspect_without_manifest(plan, entries)
    else:
        named = (
            _first_foreign(manifest, p.name)
            for p in entries
            if p.name != MANIFEST and not _is_stale_temp(p.name, manifest)
        )
        foreign = [f for f in named if f]
        blocking = [f for f in foreign if _trainer_owns(f)] if resume else foreign
        if resume:  # checkpoints are checked by what they hold (makd.engine.checkpoint.check_resume_files)
            plan.unvouched_checkpoints = [f for f in blocking if _is_checkpoint(f)]
            blocking = [f for f in blocking if not _is_checkpoint(f)]
            foreign = [f for f in foreign if not _is_checkpoint(f)]
        if blocking:
            raise RunFolderError(_foreign_line(run_dir, blocking, " (or changed since it wrote it)"))
        plan.warnings += [f"run folder {run_dir} holds {f}, which this trainer did not write; it is left alone"
                          for f in foreign]  # fmt: skip
    latest = run_dir / LATEST
    if resume:
        if not latest.is_file():
            raise RunFolderError(f"--resume: no checkpoint {latest} to continue from; drop --resume to start")
        return plan
    holds_run = latest.exists() or (run_dir / SUMMARY).exists()
    if holds_run and not overwrite:
        raise RunFolderError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to start "
            "over, or set OUTPUT_DIR / EXPERIMENT.NAME"
        )
    # Everything left is vouched for (a previous run of this trainer, or its killed start): the new run replaces it.
    plan.to_remove = [p for p in entries if p.name != MANIFEST]
    return plan


def _inspect_without_manifest(plan: RunFolderPlan, entries: list[Path]) -> None:
    """A folder without manifest: empty (a new run), or one of makd before the manifest (see the module docstring)."""
    run_dir = plan.run_dir
    if not entries:
        return
    foreign = [p.name for p in entries if not is_run_entry(p) and p.name != PLOTS]
    if foreign or not plan.resume:
        if foreign:
            raise RunFolderError(_foreign_line(run_dir, foreign))
        names = ", ".join(p.name for p in entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise RunFolderError(
            f"run folder {run_dir} holds {names} but no {MANIFEST} (written by makd before runs kept one, or not by "
            "makd), so its files cannot be told from yours; nothing was changed: continue it with --resume, or move "
            "it away (or set OUTPUT_DIR / EXPERIMENT.NAME to a new folder)"
        )
    if (run_dir / PLOTS).exists():
        plan.warnings.append(f"run folder {run_dir} holds {PLOTS}, which the trainer does not write; it is left alone")
    plan.adopt = [p.name for p in entries if p.name != PLOTS and not _is_stale_temp(p.name, None)]
    plan.warnings.append(
        f"run folder {run_dir} had no {MANIFEST} (written before makd kept one): its {len(plan.adopt)} run entries are "
        "adopted into a new one"
    )
