"""The mechanisms under the run folder's guarantees: atomic writes hashed on their way and heard by the manifest
before the replace; what the manifest vouches for; refused writes that keep the previous file; a writability check
that leaves no folder; input fingerprints taken from the readers' own bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from makd.atomic_files import (
    OutputLocationError,
    OutputWriteError,
    atomic_copy,
    atomic_write,
    atomic_write_text,
    check_output_location,
    observe_writes,
)
from makd.engine.run_manifest import TRAINER, RunManifest
from makd.formats.files import sha256_file

REPO = Path(__file__).resolve().parents[1]


def test_a_write_is_hashed_on_its_way_and_heard_before_it_replaces_the_old_file(tmp_path):
    target = tmp_path / "run" / "latest.pth"
    atomic_write_text(target, "the old content")
    heard = []

    def observer(path, written):
        heard.append((path, written, path.read_text()))  # still the old content: the replace comes after

    with observe_writes(tmp_path / "run", observer):
        written = atomic_write(target, lambda fh: torch.save({"w": torch.arange(1000.0)}, fh))
    atomic_write_text(tmp_path / "elsewhere.txt", "not observed")
    assert [(p, w) for p, w, _ in heard] == [(target, written)] and heard[0][2] == "the old content"
    assert written.size == target.stat().st_size and written.sha256 == sha256_file(target)
    assert written.mtime_ns == target.stat().st_mtime_ns


def test_what_the_manifest_vouches_for(tmp_path):
    run = tmp_path / "run"
    manifest = RunManifest(run)
    with manifest.recording(TRAINER):
        atomic_write_text(run / "epoch_2.pth", "weights of epoch 2")
        atomic_write_text(run / "latest.pth", "weights of epoch 3")
        atomic_write_text(run / "latest.pth", "weights of epoch 4")
    manifest.declare("tensorboard/events.out.tfevents.*.makdab12", TRAINER, "pattern")
    manifest.declare("wandb", TRAINER, "folder")
    saved = RunManifest.read(run)  # what the next command sees
    assert saved.entries["latest.pth"].versions[1].size == len("weights of epoch 3")  # the replaced content is kept
    assert saved.vouches("latest.pth") and saved.vouches("epoch_2.pth")
    shutil.copy(run / "epoch_2.pth", run / "latest.pth")  # the resume hint's fallback: a snapshot as latest.pth
    assert saved.vouches("latest.pth")
    atomic_write_text(run / "latest.pth", "weights of epoch 3")  # the content a kill before the replace leaves
    assert saved.vouches("latest.pth")
    shutil.copy(run / "epoch_2.pth", run / "my_backup.pth")  # the run's bytes under the user's name: the user's
    assert not saved.vouches("my_backup.pth")
    (run / "epoch_2.pth").write_text("weights of epoch X")  # same size, other bytes
    assert not saved.vouches("epoch_2.pth")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host.2.3.makdab12").write_bytes(b"events")
    assert saved.vouches("tensorboard")
    (run / "tensorboard" / "my_notes.txt").write_text("mine")
    assert not saved.vouches("tensorboard")
    (run / "wandb" / "files").mkdir(parents=True)
    (run / "wandb" / "files" / "output.log").write_text("wandb's")
    assert saved.vouches("wandb")


def test_a_damaged_manifest_is_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(Exception) as refused:
        RunManifest.read(tmp_path)
    assert "cannot be read as a makd run manifest" in str(refused.value) and "restore it" in str(refused.value)


def test_a_refused_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "latest.pth"
    atomic_write_text(target, "epoch 1")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(OutputWriteError, match=r"folder.json: it is a folder, not a file \(EISDIR\)"):
        atomic_write_text(tmp_path / "folder.json", "{}")
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(OutputWriteError, match=r"notes is a file, not a folder \(ENOTDIR\)"):
        atomic_write_text(tmp_path / "notes" / "x.json", "{}")
    # A file-size limit (RLIMIT_FSIZE), for real, in a child: EFBIG, the old file kept, no temp file left.
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(REPO)!r})
from makd.atomic_files import atomic_copy, OutputWriteError
from makd.errors import stop_signals_as_exceptions
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
with stop_signals_as_exceptions():  # SIGXFSZ ignored, as in every command
    try:
        atomic_copy({str(tmp_path / "big.bin")!r}, {str(target)!r})
    except OutputWriteError as err:
        print(err)
"""
    (tmp_path / "big.bin").write_bytes(os.urandom(100_000))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == (
        f"cannot write {target}: file too large for the file-size limit (ulimit -f) or the file system (EFBIG); "
        "latest.pth keeps its previous content"
    ), done.stderr
    assert target.read_text() == "epoch 1" and sorted(p.name for p in tmp_path.iterdir()) == [
        "big.bin", "folder.json", "latest.pth", "notes"
    ]  # fmt: skip
    atomic_copy(tmp_path / "big.bin", target)  # without the limit it goes through
    assert sha256_file(target) == sha256_file(tmp_path / "big.bin")


def test_checking_an_output_location_leaves_no_folder(tmp_path):
    assert check_output_location(tmp_path / "a" / "b" / "out.json") == tmp_path / "a" / "b" / "out.json"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputLocationError, match="is a file, not a folder"):
        check_output_location(tmp_path / "f" / "out.json")


def test_every_configured_input_is_fingerprinted_from_the_bytes_its_reader_read(release_dataset, tmp_path):
    """A MaKD + KD run reads an aspect file, a questions file, a split file and a teacher checkpoint: each is noted
    by its reader (no second read), with the config key that names it."""
    from makd.config import load_cfg
    from makd.engine.distributed import DistInfo
    from makd.engine.run_inputs import configured_files, fingerprint_inputs
    from makd.engine.tasks import task_of
    from makd.formats.read_log import recording_reads
    from makd.tasks import TASKS  # noqa: F401  (registers the tasks)

    ds = release_dataset
    teacher = tmp_path / "teacher" / "student.pth"
    fast = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0", "SOLVER.EPOCHS", "1"]
    from tool_modules import load_tool

    assert load_tool("our_train").main([str(ds["config"]), *fast, "OUTPUT_DIR", str(teacher.parent),
                                        "DISTILLER.TYPE", "NONE"]) == 0  # fmt: skip
    split = tmp_path / "train_ids.txt"
    split.write_text("".join(f"{i}\n" for i in ds["train_ids"]))
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"Question {q}?\n" for q in range(5)))
    cfg = load_cfg(str(ds["config"]), [*fast, "DISTILLER.TYPE", "MaKD_KD", "DISTILLER.TEACHER", "resnet8x4",
                                       "DISTILLER.TEACHER_CHECKPOINT", str(teacher), "DATASET.QUESTIONS",
                                       str(questions), "DATASET.TRAIN_SPLIT_FILE", str(split)])  # fmt: skip
    task = task_of(cfg, DistInfo(), torch.device("cpu"))
    with recording_reads() as reads:
        task.build()
    named = configured_files(cfg)
    assert set(named.values()) >= {"DATASET.ASPECT_JSON", "DATASET.QUESTIONS", "DATASET.TRAIN_SPLIT_FILE",
                                   "DISTILLER.TEACHER_CHECKPOINT"}  # fmt: skip
    assert set(named) <= set(reads)  # every one read by its reader: nothing hashed a second time
    inputs = fingerprint_inputs(cfg, reads, {"train": task.train_set, **task.eval_sets}, 1)
    files = {f["role"]: f for f in inputs["files"]}
    assert files["DISTILLER.TEACHER_CHECKPOINT"]["sha256"] == sha256_file(teacher)
    assert files["DATASET.TRAIN_SPLIT_FILE"]["sha256"] == sha256_file(split)
    assert inputs["splits"]["train"]["images"] == 24 and inputs["world_size"] == 1
