"""Student name resolution: a user's name ("ResNet18", "timm:convnext_atto", "wrn_40_2") -> (source, model name).

A bare name is looked up first in the model table of the input family, as mdistiller picks its table by
dataset: for CIFAR-like inputs (32-64 px) its CIFAR table (`ResNet50` = the 32-px CIFAR ResNet50, `vgg13` =
CIFAR VGG-13 with BN, `MobileNetV2`, `ShuffleV1`, ...), for ImageNet-like inputs its ImageNet table
(`ResNet18/34/50/101` = torchvision's, `MobileNetV1`) plus the paper's names. Then the local families,
torchvision classifiers, timm. A `timm:`, `torchvision:` or `local:` prefix forces one source (timm and
torchvision both have e.g. `resnet18`).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

import torchvision

# Imported for their side effect: each family registers its builders in LOCAL_STUDENTS.
from makd.models import (  # noqa: F401
    cifar_mobilenet_v2,
    cifar_resnet,
    cifar_resnet_four_stage,
    cifar_shufflenet_v1,
    cifar_shufflenet_v2,
    cifar_vgg,
    mobilenet_v1,
    wide_resnet,
)
from makd.models.errors import StudentError
from makd.models.local_registry import LOCAL_STUDENTS
from makd.registry import unknown_name_message

SOURCES = ("local", "torchvision", "timm")
INPUT_FAMILIES = ("cifar", "imagenet")  # which of mdistiller's model tables a bare name is looked up in first
CIFAR_DATASET_TYPES = ("cifar100", "cifar10", "tiny_imagenet")  # mdistiller builds these from its CIFAR table
CIFAR_MAX_IMAGE_SIZE = 64  # Tiny-ImageNet's 64 px is the largest input mdistiller's CIFAR nets are used at

# mdistiller's CIFAR model table, in its spelling -> the local builder. Its `ResNet50` is the 32-px CIFAR
# ResNet50 (teacher of MobileNetV2) and its `vgg13` is VGG-13 with BN, not torchvision's ImageNet nets.
# ResNet34 / ResNet101 (not in its table) are added at 32 px too, so no ImageNet-table name means an
# ImageNet net on CIFAR inputs.
CIFAR_TABLE: dict[str, str] = {
    **{name: name for name in ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")},
    "resnet8x4": "resnet8x4",
    "resnet32x4": "resnet32x4",
    "ResNet18": "cifar_resnet18",
    "ResNet34": "cifar_resnet34",
    "ResNet50": "cifar_resnet50",
    "ResNet101": "cifar_resnet101",
    **{name: name for name in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")},
    **{f"vgg{depth}": f"cifar_vgg{depth}" for depth in (8, 11, 13, 16, 19)},
    "MobileNetV2": "cifar_mobilenetv2",
    "ShuffleV1": "shufflev1",
    "ShuffleV2": "shufflev2",
}

# mdistiller's ImageNet model table plus the paper's column names, in their spelling -> (source, model name).
IMAGENET_TABLE: dict[str, tuple[str, str]] = {
    "ResNet18": ("torchvision", "resnet18"),
    "ResNet34": ("torchvision", "resnet34"),
    "ResNet50": ("torchvision", "resnet50"),
    "ResNet101": ("torchvision", "resnet101"),
    "MobileNetV1": ("local", "mobilenetv1"),
    "MobileNet_V1": ("local", "mobilenetv1"),
    "EfficientNet": ("torchvision", "efficientnet_b0"),
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
    import timm  # imported here: it costs ~0.4-1 s at start-up, and CIFAR / torchvision students never need it

    return tuple(timm.list_models())


def available_students() -> list[str]:
    """Every bare name `build_student` accepts, each once: local, the two mdistiller tables, torchvision, timm."""
    ordered = [*LOCAL_STUDENTS.names(), *CIFAR_TABLE, *IMAGENET_TABLE, *torchvision_students(), *timm_students()]
    return list(dict.fromkeys(ordered))


def input_family_of(cfg) -> str:
    """ "cifar" for CIFAR-like inputs (DATASET.TYPE cifar100 / tiny_imagenet, or DATASET.IMAGE_SIZE <= 64),
    else "imagenet": the model table mdistiller would pick for this config's DISTILLER.STUDENT / TEACHER."""
    if cfg.DATASET.TYPE.lower() in CIFAR_DATASET_TYPES or cfg.DATASET.IMAGE_SIZE <= CIFAR_MAX_IMAGE_SIZE:
        return "cifar"
    return "imagenet"


def _table(family: str) -> dict[str, StudentSpec]:
    """The family's table keyed by normalised name."""
    if family == "cifar":
        return {normalize_student_name(k): StudentSpec("local", v) for k, v in CIFAR_TABLE.items()}
    return {normalize_student_name(k): StudentSpec(*v) for k, v in IMAGENET_TABLE.items()}


def _in_source(source: str, key: str) -> bool:
    if source == "local":
        return key in LOCAL_STUDENTS
    if source == "torchvision":
        return key in torchvision_students()
    import timm  # lazily, as in timm_students

    return timm.is_model(key)


def _source_names(source: str) -> list[str]:
    if source == "local":
        return LOCAL_STUDENTS.names()
    return list(torchvision_students() if source == "torchvision" else timm_students())


def _table_names(family: str) -> list[str]:
    """The family's table names, one per model (the MobileNet_V1 spelling of MobileNetV1 is left out)."""
    table = CIFAR_TABLE if family == "cifar" else IMAGENET_TABLE
    seen: set = set()
    names = []
    for name, target in table.items():
        if target not in seen:
            seen.add(target)
            names.append(name)
    return names


def family_names(family: str) -> list[str]:
    """Names offered first for `family`: its mdistiller table, then its own local / torchvision names."""
    own = [n for n in LOCAL_STUDENTS.names() if n != "mobilenetv1"] if family == "cifar" else torchvision_students()
    return list(dict.fromkeys([*_table_names(family), *own]))


def _close_matches(name: str, first: list[str], rest: list[str]) -> list[str]:
    """Up to 3 names close to `name`, those of `first` before those of `rest` (compared normalised)."""
    found: list[str] = []
    for pool in (first, rest):
        by_key = {}
        for candidate in pool:
            by_key.setdefault(normalize_student_name(candidate), candidate)
        keys = difflib.get_close_matches(normalize_student_name(name), list(by_key), n=3, cutoff=0.5)
        found += [by_key[k] for k in keys if by_key[k] not in found]
    return found[:3]


def _unknown_message(name: str, family: str) -> str:
    first = family_names(family)
    rest = [n for n in available_students() if n not in set(first)]
    close = _close_matches(name, first, rest)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    table = ", ".join(_table_names(family))
    return (
        f"unknown student {name!r} for {family} inputs{hint} ({family} names: {table}; or any local, torchvision "
        "or timm classifier, prefix local:, torchvision: or timm: to force a source)"
    )


def resolve_student_name(name: str, input_family: str = "imagenet") -> StudentSpec:
    """Map a user-facing student name to its source and canonical name; unknown -> StudentError with close matches.

    input_family ("cifar" | "imagenet", see input_family_of) picks which of mdistiller's model tables a bare
    name is looked up in first: "ResNet50" is the 32-px CIFAR ResNet50 for "cifar", torchvision's for
    "imagenet". After the table: local students, (for "cifar") the ImageNet table's paper names, torchvision,
    timm. A `local:`, `torchvision:` or `timm:` prefix forces the source whatever the family.
    """
    if input_family not in INPUT_FAMILIES:
        raise StudentError(f"input family {input_family!r} is unknown; use one of {', '.join(INPUT_FAMILIES)}")
    if not isinstance(name, str) or not name.strip():
        raise StudentError(f"student name {name!r} is empty (set DISTILLER.STUDENT, e.g. 'resnet18', 'timm:resnet18')")
    other = "imagenet" if input_family == "cifar" else "cifar"
    prefix, sep, rest = name.strip().partition(":")
    if sep and prefix.lower() in SOURCES:
        source, key = prefix.lower(), normalize_student_name(rest)
        for family in (input_family, other):
            spec = _table(family).get(key)
            if spec is not None and spec.source == source:
                return spec
        if _in_source(source, key):
            return StudentSpec(source, key)
        raise StudentError(unknown_name_message(f"{source} student", rest, _source_names(source)))
    key = normalize_student_name(name)
    spec = _table(input_family).get(key)
    if spec is not None:
        return spec
    if key in LOCAL_STUDENTS:
        return StudentSpec("local", key)
    if input_family == "cifar" and key in _table("imagenet"):  # MobileNetV1, EfficientNet: no CIFAR namesake
        return _table("imagenet")[key]
    for source in ("torchvision", "timm"):
        if _in_source(source, key):
            return StudentSpec(source, key)
    raise StudentError(_unknown_message(name, input_family))
