"""build_student: any student by name, random init, classifier widened to C + Q outputs and checked."""

from __future__ import annotations

import numbers

import torchvision
from torch import nn

from makd.models.errors import StudentError, first_line
from makd.models.heads import check_head
from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.names import StudentSpec, resolve_student_name
from makd.models.pretrained import load_student_weights, read_state_dict

# torchvision models whose auxiliary heads make forward() return a namedtuple in train mode; MaKD needs plain
# logits. init_weights=True keeps their classic initialisation and silences torchvision's FutureWarning.
TORCHVISION_EXTRA_KWARGS: dict[str, dict] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
LOCAL_CHECK_SIZE = (32, 32)  # the local students pool adaptively, so the cheapest input proves the head
DEFAULT_CHECK_SIZE = (224, 224)  # torchvision classifiers (ViT / MaxViT accept only their native size)


def _construct(spec: StudentSpec, num_outputs: int, in_chans: int) -> nn.Module:
    if spec.source == "local":
        return LOCAL_STUDENTS.get(spec.name)(num_outputs, in_chans=in_chans)
    if spec.source == "torchvision":
        if in_chans != 3:
            raise StudentError(
                f"student {spec.qualified}: torchvision models take 3 input channels, got in_chans={in_chans}; "
                f"use timm:{spec.name} or a local student"
            )
        extra = TORCHVISION_EXTRA_KWARGS.get(spec.name, {})
        # weights=None: random init, never a download.
        return torchvision.models.get_model(spec.name, weights=None, num_classes=num_outputs, **extra)
    import timm  # only a timm student pays timm's import time (~0.4-1 s)

    return timm.create_model(spec.name, pretrained=False, num_classes=num_outputs, in_chans=in_chans)


def _check_size(spec: StudentSpec, model: nn.Module) -> tuple[int, int]:
    if spec.source == "local":
        return LOCAL_CHECK_SIZE
    if spec.source == "timm":
        # timm records each architecture's native input; fixed-size models (ViTs) accept only that one.
        input_size = getattr(model, "pretrained_cfg", {}).get("input_size", (3, *DEFAULT_CHECK_SIZE))
        return int(input_size[-2]), int(input_size[-1])
    return DEFAULT_CHECK_SIZE


def build_student(
    name: str, num_outputs: int, *, pretrained_path: str = "", in_chans: int = 3, input_family: str = "imagenet"
) -> nn.Module:
    """Build the student `name` with a final Linear of `num_outputs` (= C + Q) outputs, in train mode on the CPU.

    input_family ("cifar" | "imagenet"; from a config: `input_family_of(cfg)`) decides which of mdistiller's
    model tables a bare name means: "ResNet50" is the 32-px CIFAR ResNet50 for "cifar", torchvision's for
    "imagenet" (see makd.models.names).

    forward(x [B, in_chans, H, W]) -> logits [B, num_outputs]. Random initialisation (never downloads);
    with `pretrained_path`, every weight but the classifier comes from that local checkpoint. The head width is
    verified by inspecting the final Linear and by a dry forward; any failure raises StudentError (one line).
    """
    for what, value in (("num_outputs", num_outputs), ("in_chans", in_chans)):
        # numbers.Integral admits numpy ints; bool is an int subclass but never a meaningful width.
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            hint = " (C + Q)" if what == "num_outputs" else ""
            raise StudentError(f"student {name!r}: {what} must be a positive int{hint}, got {value!r}")
    num_outputs, in_chans = int(num_outputs), int(in_chans)
    spec = resolve_student_name(name, input_family)
    # Read the checkpoint first: a bad path fails before any time is spent building the model.
    weights = read_state_dict(pretrained_path) if pretrained_path else None
    try:
        model = _construct(spec, num_outputs, in_chans)
    except StudentError:
        raise
    except Exception as err:  # a constructor rejecting an argument: name the student and the call
        raise StudentError(
            f"student {spec.qualified}: construction with num_classes={num_outputs}, in_chans={in_chans} failed "
            f"({first_line(err)})"
        ) from None
    check_head(model, num_outputs, spec.qualified, _check_size(spec, model), in_chans)
    if weights is not None:
        load_student_weights(model, weights, spec.qualified)
    return model.train()
