"""inputs.json: the fingerprints of the world a run started in, and the check that `--resume` continues in it.

Recorded when a run starts: every input file it read (its path, size and sha256, with the config key that names
it: the questions, the aspect files and each part of DATASET.ASPECT_SOURCES, class-target files and class maps,
COCO instances, split files, the teacher checkpoint, pretrained weights), the image list of every split (count and
a sha256 of its ids and labels) and the number of processes. The hashes come from the readers themselves
(makd.formats.read_log: the bytes parsed, read once); a file a config key names that no reader noted is hashed
here.

`--resume` recomputes them from its own reads and refuses, in one line naming what changed and how to go on, when
any file's bytes, an image list or the number of processes differ: epoch 1 would have used other targets or another
global batch than the epochs after it, and the summary could not say which.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import yaml

from makd.atomic_files import file_sha256
from makd.config.defaults import flatten_tree
from makd.engine.run_folder import INPUTS
from makd.errors import MakdError
from makd.formats.read_log import ReadFile

FORMAT = "makd-run-inputs-1"
# Config keys that name outputs or folders of this run, never an input file.
NOT_INPUTS = ("OUTPUT_DIR", "LOG.", "EXPERIMENT.")
READ_BY_THE_RUN = "read by the run"  # the role of an input no config key names (found through a sidecar, ...)


class InputsChangedError(MakdError):
    """--resume found an input file, an image list or the number of processes changed since the run started."""


def configured_files(cfg) -> dict[str, str]:
    """Absolute path -> the config key naming it ("DATASET.ASPECT_SOURCES[1]" for a list entry), for every config
    value that names an existing file (a DATASET.ASPECT_SOURCES entry "PATH:NUMBERS" names PATH)."""
    found: dict[str, str] = {}
    for key, value in flatten_tree(yaml.safe_load(cfg.dump())).items():
        if key.startswith(NOT_INPUTS):
            continue
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            if not isinstance(item, str) or not item:
                continue
            path = item if os.path.isfile(item) else item.rsplit(":", 1)[0]
            if os.path.isfile(path):
                found.setdefault(os.path.abspath(path), key if len(values) == 1 else f"{key}[{index}]")
    return found


def image_list_fingerprint(dataset) -> dict[str, Any]:
    """{"images": N, "sha256": of the ids and labels} of a split (N alone where the dataset has no id list)."""
    index = getattr(dataset, "index", None)
    if index is None or not hasattr(index, "ids"):
        return {"images": len(dataset)}
    digest = hashlib.sha256(json.dumps([index.ids, list(map(int, index.labels))]).encode("utf-8")).hexdigest()
    return {"images": len(index.ids), "sha256": digest}


def fingerprint_inputs(cfg, reads: dict[str, ReadFile], splits: dict[str, Any], world_size: int) -> dict:
    """The content of inputs.json for this process's view of the run (see the module docstring)."""
    named = configured_files(cfg)
    files = []
    for path in sorted(set(reads) | set(named)):
        read = reads.get(path)
        size, digest = (read.size, read.sha256) if read else (os.path.getsize(path), file_sha256(path))
        files.append({"role": named.get(path, READ_BY_THE_RUN), "path": path, "size": size, "sha256": digest})
    return {
        "format": FORMAT,
        "world_size": world_size,
        "batch_size_per_process": cfg.SOLVER.BATCH_SIZE,
        "files": files,
        "splits": {name: image_list_fingerprint(dataset) for name, dataset in splits.items()},
    }


def _identity(entry: dict) -> tuple[str, str]:
    return ("path", entry["path"]) if entry["role"] == READ_BY_THE_RUN else ("role", entry["role"])


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "none"


def changes(saved: dict, now: dict) -> list[str]:
    """What differs between the inputs a run started with and this resume's, one phrase each."""
    found = []
    old_world, new_world = saved.get("world_size"), now.get("world_size")
    if old_world is not None and old_world != new_world:
        per = now.get("batch_size_per_process", 0)
        found.append(
            f"the number of processes ({old_world} at the start, global batch {old_world * per}; {new_world} now, "
            f"global batch {new_world * per}): resume with torchrun --nproc_per_node {old_world} (or our_train.py "
            f"--nproc-per-node {old_world})"
            if old_world > 1
            else f"the number of processes (1 at the start; {new_world} now): resume with one process (no torchrun)"
        )
    # Matched by the config key naming them (a relative path resumed from another folder names another file), by
    # path for the files no key names.
    old_files = {_identity(f): f for f in saved.get("files", [])}
    new_files = {_identity(f): f for f in now.get("files", [])}
    for identity, old in old_files.items():
        new = new_files.get(identity)
        if new is None:
            if os.path.exists(old["path"]):
                continue  # the same config no longer reads it (e.g. a file only the first start read); not a change
            found.append(f"{old['role']} {old['path']} is gone (sha256 {_short(old['sha256'])} at the start)")
        elif new["sha256"] != old["sha256"]:
            where = old["path"] if new["path"] == old["path"] else f"{new['path']} (at the start: {old['path']})"
            found.append(
                f"{old['role']} {where} changed since the run started (sha256 {_short(old['sha256'])} then, "
                f"{_short(new['sha256'])} now)"
            )
    for name, old in saved.get("splits", {}).items():
        new = now.get("splits", {}).get(name)
        if new is not None and new != old:
            found.append(
                f"the {name} images changed ({old.get('images')} at the start, {new.get('images')} now"
                f"{'' if old.get('images') != new.get('images') else ', other ids or labels'})"
            )
    return found


def check_resume_inputs(saved: dict | None, now: dict, run_dir) -> list[str]:
    """Refuse (InputsChangedError) when anything changed; returns warning lines (none for a run that recorded its
    inputs)."""
    if saved is None:
        return [
            f"{run_dir} has no {INPUTS} (the run started before makd recorded its inputs): the inputs cannot be "
            "compared with the first epochs'; they are recorded now"
        ]
    found = changes(saved, now)
    if found:
        more = f" (and {len(found) - 1} more: {'; '.join(found[1:3])})" if len(found) > 1 else ""
        raise InputsChangedError(
            f"--resume: {found[0]}{more}; the epochs done used the old inputs: put them back as they were, or "
            "start over with --overwrite (or a new OUTPUT_DIR)"
        )
    return []


def read_inputs(run_dir) -> dict | None:
    """The run folder's inputs.json, None without one; a damaged one is refused in one line."""
    path = os.path.join(run_dir, INPUTS)
    if not os.path.isfile(path):
        return None
    try:
        data = json.loads(open(path, encoding="utf-8").read())
        if data.get("format") != FORMAT:
            raise ValueError(data.get("format"))
        return data
    except (OSError, ValueError, AttributeError) as err:
        raise InputsChangedError(
            f"--resume: {path} cannot be read ({type(err).__name__}); restore it, or start over with --overwrite"
        ) from None
