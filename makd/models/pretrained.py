"""Start a student from a local checkpoint: every weight except the final classifier, which stays freshly initialised.

The head is never loaded because its width is C + Q, which changes with the dataset and the number of
questions; every other tensor must match exactly (strict), so a checkpoint from another architecture fails
loudly instead of leaving half the network random.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from makd.formats.read_log import note_read
from makd.models.errors import StudentError, first_line
from makd.models.heads import classifier_name

STATE_DICT_KEYS = ("model", "state_dict", "student")  # where trainer checkpoints / exports keep the weights
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
SHOWN = 3  # keys listed per kind of problem in an error


@dataclass(frozen=True)
class StudentWeights:
    """The tensors read from a local checkpoint, wrapper prefixes already stripped."""

    state: dict[str, torch.Tensor]
    path: str
    saved_as: str | None = None  # the student name a student export records, for error messages


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())
    )


def _torch_load(path: Path) -> Any:
    data = path.read_bytes()  # read once: its sha256 is the run's input fingerprint (makd.formats.read_log)
    note_read(path, data)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Full training checkpoints also hold the resolved yacs config and numpy RNG states, which the safe
        # loader refuses; the file is the user's own, named explicitly, so the full unpickler is acceptable.
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def read_state_dict(path: str | os.PathLike) -> StudentWeights:
    """Read the weights from `path` (on the CPU) -> StudentWeights, the state_dict with wrapper prefixes stripped.

    Accepts a raw state_dict, a saved nn.Module, or a dict holding the state_dict under 'model', 'state_dict'
    or 'student' (trainer checkpoints and student exports).
    """
    file = Path(path)
    if not file.is_file():
        raise StudentError(
            f"student checkpoint {path} does not exist (fix DISTILLER.STUDENT_PRETRAINED, or '' to train from scratch)"
        )
    try:
        obj = _torch_load(file)
    except Exception as err:
        raise StudentError(f"{path}: not a readable torch checkpoint ({first_line(err)})") from None
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if not _is_state_dict(state):
        holders = [state.get(key) for key in STATE_DICT_KEYS] if isinstance(state, Mapping) else []
        state = next((holder for holder in holders if _is_state_dict(holder)), None)
    if state is None:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise StudentError(
            f"{path}: no state_dict found (expected a raw state_dict or a dict holding one under "
            f"{', '.join(STATE_DICT_KEYS)}; found {keys})"
        )
    saved_as = obj.get("student") if isinstance(obj, Mapping) else None
    return StudentWeights(_strip_wrappers(state), str(path), saved_as if isinstance(saved_as, str) else None)


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        stripped[key] = value
    # A whole distiller saved instead of its student: every key sits under 'student.'.
    if all(key.startswith("student.") for key in stripped):
        stripped = {key[len("student.") :]: value for key, value in stripped.items()}
    return stripped


def _listed(what: str, items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{len(items)} {what} ({', '.join(items[:SHOWN])}{more})"


def load_student_weights(model: nn.Module, weights: StudentWeights | str | os.PathLike, label: str = "") -> int:
    """Copy every tensor of `weights` (or of the checkpoint at that path) but the head into `model` -> count loaded.

    The classifier keeps the values it was built with (a fresh initialisation for the new C + Q width).
    Any other missing, unexpected or differently shaped tensor raises StudentError listing a few of them.
    """
    if not isinstance(weights, StudentWeights):
        weights = read_state_dict(weights)
    state = weights.state
    head = classifier_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    own = model.state_dict()
    incoming = {key: value for key, value in state.items() if key not in head_keys}
    # Checkpoints older than torch 0.4.1 lack BN's num_batches_tracked; it only matters for momentum=None.
    missing = [k for k in own if k not in incoming and k not in head_keys and not k.endswith("num_batches_tracked")]
    unexpected = [key for key in incoming if key not in own]
    reshaped = [
        f"{key} {list(value.shape)} vs {list(own[key].shape)}"
        for key, value in incoming.items()
        if key in own and value.shape != own[key].shape
    ]
    if missing or unexpected or reshaped:
        problems = [
            _listed(what, items)
            for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", reshaped))
            if items
        ]
        origin = f" (it was saved from student {weights.saved_as!r})" if weights.saved_as else ""
        raise StudentError(
            f"{weights.path} does not fit student {label or type(model).__name__}{origin}: {'; '.join(problems)}; "
            "use a checkpoint of the same architecture"
        )
    model.load_state_dict(incoming, strict=False)
    return len(incoming)
