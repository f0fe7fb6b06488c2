"""Student name resolution: a user's name ("ResNet18", "timm:convnext_atto", "wrn_40_2") -> (source, model name).

Order for a bare name: the paper's aliases, the local families, torchvision classifiers, timm. A `timm:`,
`torchvision:` or `local:` prefix forces one source (timm and torchvision both have e.g. `resnet18`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import timm
import torchvision

# Imported for their side effect: each family registers its builders in LOCAL_STUDENTS.
from makd.models import cifar_resnet, mobilenet_v1, wide_resnet  # noqa: F401
from makd.models.errors import StudentError
from makd.models.local_registry import LOCAL_STUDENTS
from makd.registry import unknown_name_message

SOURCES = ("local", "torchvision", "timm")

# The paper's column names (normalised) -> the models its tables mean.
PAPER_ALIASES: dict[str, tuple[str, str]] = {
    "resnet18": ("torchvision", "resnet18"),
    "resnet34": ("torchvision", "resnet34"),
    "mobilenetv1": ("local", "mobilenetv1"),
    "mobilenet_v1": ("local", "mobilenetv1"),
    "efficientnet": ("torchvision", "efficientnet_b0"),
    "efficientnet_b0": ("torchvision", "efficientnet_b0"),
}


@dataclass(frozen=True)
class StudentSpec:
    """A resolved student: which library builds it and under which name."""

    source: str  # one of SOURCES
    name: str

    @property
    def qualified(self) -> str:
        """'<source>:<name>', unambiguous in messages and checkpoints."""
        return f"{self.source}:{self.name}"


def normalize_student_name(name: str) -> str:
    """'EfficientNet-B0' -> 'efficientnet_b0': lower case, '-' as '_', no surrounding spaces."""
    return name.strip().lower().replace("-", "_")


@functools.lru_cache(maxsize=1)
def torchvision_students() -> tuple[str, ...]:
    """torchvision's classification models (not detection / segmentation / video)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.lru_cache(maxsize=1)
def timm_students() -> tuple[str, ...]:
    """Every timm architecture name (pretrained tags such as '.a1_in1k' are accepted on top)."""
    return tuple(timm.list_models())


def available_students() -> list[str]:
    """Every bare name `build_student` accepts, each once, in resolution order: local, aliases, torchvision, timm."""
    ordered = [*LOCAL_STUDENTS.names(), *PAPER_ALIASES, *torchvision_students(), *timm_students()]
    return list(dict.fromkeys(ordered))


def _in_source(source: str, key: str) -> bool:
    if source == "local":
        return key in LOCAL_STUDENTS
    if source == "torchvision":
        return key in torchvision_students()
    return timm.is_model(key)


def _source_names(source: str) -> list[str]:
    if source == "local":
        return LOCAL_STUDENTS.names()
    return list(torchvision_students() if source == "torchvision" else timm_students())


def resolve_student_name(name: str) -> StudentSpec:
    """Map a user-facing student name to its source and canonical name; unknown -> StudentError with close matches."""
    if not isinstance(name, str) or not name.strip():
        raise StudentError(f"student name {name!r} is empty (set DISTILLER.STUDENT, e.g. 'resnet18', 'timm:resnet18')")
    prefix, sep, rest = name.strip().partition(":")
    if sep and prefix.lower() in SOURCES:
        source, key = prefix.lower(), normalize_student_name(rest)
        if PAPER_ALIASES.get(key, ("", ""))[0] == source:
            return StudentSpec(*PAPER_ALIASES[key])
        if _in_source(source, key):
            return StudentSpec(source, key)
        raise StudentError(unknown_name_message(f"{source} student", rest, _source_names(source)))
    key = normalize_student_name(name)
    if key in PAPER_ALIASES:
        return StudentSpec(*PAPER_ALIASES[key])
    for source in SOURCES:
        if _in_source(source, key):
            return StudentSpec(source, key)
    raise StudentError(
        unknown_name_message("student", name, available_students())
        + "; prefix timm: or torchvision: to force a source"
    )
