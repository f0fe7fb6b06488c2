"""CNN teachers of the KD family: any student architecture by name, loaded from a local weights file.

DISTILLER.TEACHER names the architecture (any name build_student accepts) and DISTILLER.TEACHER_CHECKPOINT
the weights. Accepted files: a makd student.pth (C outputs, or C + Q: the class logits are used), a makd
training checkpoint (student weights under "model", or the whole distiller's state under "distiller" with
the student's keys under "student."), or a plain state_dict (a {"state_dict": ...} wrapper too). The teacher
is checked against the data before training: its class count (and class order, when the file records it)
and a dry forward at the configured image size.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from makd.errors import MakdError
from makd.formats.read_log import note_read
from makd.models.errors import first_line
from makd.models.factory import build_student
from makd.models.heads import classifier_name
from makd.models.names import resolve_student_name

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class TeacherError(MakdError, ValueError):
    """The CNN teacher cannot be built, loaded or does not fit the data (one line naming the key and the fix)."""


class ClassLogitsTeacher(nn.Module):
    """A frozen network whose first C outputs are class logits: forward(x [B, 3, H, W]) -> [B, C]."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model, self.num_classes = model, num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[:, : self.num_classes]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Drop DDP / compile wrappers; with `prefix`, keep only keys under it (a distiller's "student.") without it."""
    out = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        if prefix:
            if not key.startswith(prefix):
                continue  # the teacher's own teacher, a method's modules: not part of the student
            key = key[len(prefix) :]
        out[key] = value
    return out


def read_teacher_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(student state_dict, metadata) of a teacher file; metadata holds what a makd file records
    (num_classes, num_aspects, class_names, student) and is empty for a plain state_dict."""
    file = Path(path)
    if not file.is_file():
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path} does not exist; train the teacher first (DISTILLER.TYPE NONE, "
            "see docs/methods.md) and point the key at its student.pth"
        )
    try:
        data = file.read_bytes()  # read once: its sha256 is the run's input fingerprint (makd.formats.read_log)
        note_read(file, data)
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # a makd training checkpoint also holds the config and RNG states
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as err:
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path}: not a readable torch file ({first_line(err)})"
        ) from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if _is_state_dict(obj):
        state = _strip(obj)
        if state and all(key.startswith("student.") for key in state):  # a bare distiller state_dict
            state = _strip(state, "student.")
        return state, {}
    if not isinstance(obj, Mapping):
        raise TeacherError(f"DISTILLER.TEACHER_CHECKPOINT {path}: holds a {type(obj).__name__}, not weights")
    meta = {k: obj[k] for k in ("num_classes", "num_aspects", "class_names", "student") if k in obj}
    if not isinstance(meta.get("student"), str):
        meta.pop("student", None)
    if _is_state_dict(obj.get("model")):
        return _strip(obj["model"]), meta
    if _is_state_dict(obj.get("distiller")):
        return _strip(obj["distiller"], "student."), meta
    for key in ("state_dict", "student"):
        if _is_state_dict(obj.get(key)):
            return _strip(obj[key]), meta
    raise TeacherError(
        f"DISTILLER.TEACHER_CHECKPOINT {path}: no weights found (expected a state_dict, or a dict holding one under "
        f"model, distiller, state_dict or student; found keys {sorted(map(str, obj))[:8]})"
    )


def _head_outputs(state: dict[str, torch.Tensor], head: str, path: str) -> int:
    weight = state.get(f"{head}.weight")
    if weight is None or weight.ndim != 2:
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path} has no classifier weight {head}.weight of this architecture; "
            "set DISTILLER.TEACHER to the architecture the file was trained with"
        )
    return int(weight.shape[0])


def load_teacher(
    name: str,
    path: str,
    num_classes: int,
    image_size: int,
    class_names: list[str] | None = None,
    input_family: str = "imagenet",
) -> ClassLogitsTeacher:
    """The teacher `name` with the weights of `path`, checked to give C class logits at `image_size` px.

    Returns a ClassLogitsTeacher in eval mode with requires_grad False, on the CPU. Head widths: C, or
    C + Q when the file records num_classes C (a makd MaKD student); any other width is refused.
    """
    try:
        spec = resolve_student_name(name, input_family)
    except MakdError as err:
        raise TeacherError(
            f"DISTILLER.TEACHER {name!r} is not an architecture makd can build ({err}); name the CNN teacher's "
            "architecture (any student name, e.g. resnet32x4, ResNet50)"
        ) from None
    state, meta = read_teacher_weights(path)
    saved_as = meta.get("student")
    if saved_as and resolve_student_name(saved_as, input_family) != spec:
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path} holds a {saved_as!r} but DISTILLER.TEACHER is {name!r}; "
            f"set DISTILLER.TEACHER {saved_as}"
        )
    recorded = meta.get("num_classes")
    if recorded is not None and recorded != num_classes:
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path} was trained on {recorded} classes but the data has {num_classes}; "
            "use a teacher trained on this dataset"
        )
    if class_names is not None and meta.get("class_names") not in (None, list(class_names)):
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path} names its classes differently from the data (first: "
            f"{meta['class_names'][:3]} vs {list(class_names)[:3]}); use a teacher trained on this dataset"
        )
    try:
        model = build_student(name, num_classes, input_family=input_family)
        outputs = _head_outputs(state, classifier_name(model), path)
        if outputs != num_classes:
            if recorded is None or outputs < num_classes:
                raise TeacherError(
                    f"DISTILLER.TEACHER_CHECKPOINT {path} gives {outputs} outputs but the data has {num_classes} "
                    "classes (a C + Q head is accepted from a makd file that records num_classes); use a teacher "
                    "trained on this dataset"
                )
            model = build_student(name, outputs, input_family=input_family)
    except TeacherError:
        raise
    except MakdError as err:
        raise TeacherError(f"DISTILLER.TEACHER {name!r}: {err}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        listed = "; ".join(
            f"{len(keys)} {what} ({', '.join(keys[:3])})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("reshaped", reshaped))
            if keys
        )
        raise TeacherError(
            f"DISTILLER.TEACHER_CHECKPOINT {path} does not fit teacher {spec.qualified}: {listed}; set "
            "DISTILLER.TEACHER to the architecture the file was trained with"
        )
    model.load_state_dict(state, strict=False)
    teacher = ClassLogitsTeacher(model, num_classes).eval().requires_grad_(False)
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(1, 3, image_size, image_size))
    except Exception as err:
        raise TeacherError(
            f"teacher {spec.qualified} fails on {image_size}-px input (DATASET.IMAGE_SIZE): {first_line(err)}"
        ) from None
    if tuple(out.shape) != (1, num_classes):
        raise TeacherError(f"teacher {spec.qualified} returns shape {list(out.shape)}, expected [1, {num_classes}]")
    return teacher
