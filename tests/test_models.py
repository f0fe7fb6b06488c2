"""Stage-3 students: every family builds with its head widened to C + Q, names resolve, checkpoints round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from makd.config import get_cfg
from makd.models import (
    LOCAL_STUDENTS,
    StudentError,
    available_students,
    build_student,
    check_head,
    classifier_layer,
    classifier_name,
    load_student_weights,
    resolve_student_name,
)
from makd.models.mobilenet_v1 import MobileNetV1
from makd.models.names import StudentSpec

C, Q = 10, 5
LOCAL = [
    "mobilenetv1",
    *(f"resnet{depth}" for depth in (8, 14, 20, 32, 44, 56, 110)),
    "resnet8x4",
    "resnet32x4",
    *(f"wrn_{depth}_{k}" for depth in (16, 40) for k in (1, 2)),
    *(f"cifar_vgg{depth}" for depth in (8, 11, 13, 16, 19)),
    "cifar_mobilenetv2",
    "shufflev1",
    "shufflev2",
    *(f"cifar_resnet{depth}" for depth in (18, 34, 50, 101)),
]


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """On a shared 2-core machine, two OpenMP threads spin against other processes (10-50x slower convs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_aspect_units_learn_only_from_aspect_loss(model: nn.Module, logits: torch.Tensor) -> None:
    """A loss on the Q aspect logits must reach exactly the Q extra head rows, not the C class rows."""
    logits[:, C:].sum().backward()
    grad = classifier_layer(model).weight.grad
    assert grad.shape[0] == C + Q
    assert torch.count_nonzero(grad[:C]) == 0
    assert torch.all(grad[C:].abs().sum(dim=1) > 0)


# ---------------------------------------------------------------- local families


def test_local_registry_holds_exactly_the_local_families():
    assert LOCAL_STUDENTS.names() == sorted(LOCAL)


# cifar_resnet34 / 101 share their class with cifar_resnet18 / 50 and cost seconds each here: covered by those.
@pytest.mark.parametrize("name", [n for n in LOCAL if n not in ("cifar_resnet34", "cifar_resnet101")])
def test_local_student_head_is_widened_to_c_plus_q(name):
    torch.manual_seed(0)
    model = build_student(name, C + Q)
    assert model.training  # the dry check ran in eval mode and restored train mode
    # eval-mode dry forward: BatchNorm statistics are untouched
    assert all(torch.count_nonzero(m.running_mean) == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    head = classifier_layer(model)
    assert (head.out_features, classifier_name(model)) == (C + Q, "fc")
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, C + Q)
    assert_aspect_units_learn_only_from_aspect_loss(model, logits)


@pytest.mark.parametrize("name, height, width", [("mobilenetv1", 24, 40), ("resnet8x4", 64, 72), ("wrn_16_2", 20, 32)])
def test_local_students_accept_any_input_size(name, height, width):
    model = build_student(name, C + Q).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, height, width)).shape == (2, C + Q)


def test_local_student_with_one_input_channel():
    model = build_student("resnet20", 7, in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert model.stem[0].weight.shape == (16, 1, 3, 3)


# Well-known sizes for 100 classes (CRD / mdistiller tables), in millions of parameters.
@pytest.mark.parametrize(
    "name, millions",
    [
        ("resnet20", 0.28),
        ("resnet56", 0.86),
        ("resnet110", 1.73),
        ("resnet8x4", 1.23),
        ("resnet32x4", 7.43),
        ("wrn_16_2", 0.70),
        ("wrn_40_2", 2.26),
    ],
)
def test_cifar_family_parameter_counts_match_the_literature(name, millions):
    model = LOCAL_STUDENTS.get(name)(100)
    assert parameter_count(model) / 1e6 == pytest.approx(millions, rel=0.02)


def test_mobilenet_v1_honours_num_classes():
    # The official code's MobileNetV1 always had 1000 outputs; here num_classes reaches the head.
    imagenet, small = MobileNetV1(num_classes=1000), MobileNetV1(num_classes=7)
    assert parameter_count(imagenet) / 1e6 == pytest.approx(4.23, rel=0.01)
    # Only the head depends on num_classes: 993 fewer rows of (1024 weights + 1 bias).
    assert parameter_count(imagenet) - parameter_count(small) == 993 * 1025
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert classifier_layer(small) is small.fc


# ---------------------------------------------------------------- torchvision / timm


@pytest.mark.parametrize(
    "name, model_type, size",
    [
        ("torchvision:resnet18", torchvision.models.ResNet, 64),
        ("efficientnet_b0", torchvision.models.EfficientNet, 64),
        ("mobilenet_v3_small", torchvision.models.MobileNetV3, 64),
        ("timm:resnet18", timm.models.resnet.ResNet, 64),
        ("test_convnext", timm.models.convnext.ConvNeXt, 64),
        ("test_vit", timm.models.vision_transformer.VisionTransformer, 160),  # fixed-size ViT
    ],
)
def test_library_student_head_is_widened_to_c_plus_q(name, model_type, size):
    model = build_student(name, C + Q)
    assert isinstance(model, model_type)
    assert classifier_layer(model).out_features == C + Q
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, C + Q)
    assert_aspect_units_learn_only_from_aspect_loss(model, logits)


def test_googlenet_returns_plain_logits_in_train_mode():
    # Its auxiliary heads would make forward() return a namedtuple during training.
    model = build_student("googlenet", C + Q)
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, C + Q)


def test_timm_student_with_one_input_channel():
    model = build_student("timm:test_resnet", 6, in_chans=1)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 6)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, spec",
    [
        ("ResNet18", StudentSpec("torchvision", "resnet18")),
        ("ResNet34", StudentSpec("torchvision", "resnet34")),
        ("MobileNetV1", StudentSpec("local", "mobilenetv1")),
        ("MobileNet-V1", StudentSpec("local", "mobilenetv1")),
        ("EfficientNet", StudentSpec("torchvision", "efficientnet_b0")),
        ("EfficientNet-B0", StudentSpec("torchvision", "efficientnet_b0")),
        ("WRN-40-2", StudentSpec("local", "wrn_40_2")),
        (" resnet8x4 ", StudentSpec("local", "resnet8x4")),
        ("convnext_tiny", StudentSpec("torchvision", "convnext_tiny")),  # torchvision before timm
        ("convnext_atto", StudentSpec("timm", "convnext_atto")),  # only timm has it
        ("timm:ResNet18", StudentSpec("timm", "resnet18")),
        ("TIMM:resnet18.a1_in1k", StudentSpec("timm", "resnet18.a1_in1k")),  # a pretrained tag, still random init
        ("torchvision:efficientnet_b0", StudentSpec("torchvision", "efficientnet_b0")),
        ("local:mobilenet_v1", StudentSpec("local", "mobilenetv1")),
    ],
)
def test_names_resolve_to_the_obvious_model(name, spec):
    assert resolve_student_name(name) == spec


def test_paper_student_names_build_the_paper_models():
    resnet18 = build_student("ResNet18", C + Q)
    assert [len(layer) for layer in (resnet18.layer1, resnet18.layer2, resnet18.layer3, resnet18.layer4)] == [2] * 4
    assert isinstance(build_student("MobileNetV1", C + Q), MobileNetV1)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet19", r"unknown student 'resnet19' for imagenet inputs; did you mean 'ResNet18'"),
        ("mobilenetv2", r"did you mean 'mobilenet_v2'"),
        ("timm:resnet_nope", r"unknown timm student 'resnet_nope'; did you mean"),
        ("torchvision:mobilenet_v1", r"unknown torchvision student 'mobilenet_v1'; did you mean 'mobilenet_v2'"),
        ("  ", r"student name '  ' is empty"),
    ],
)
def test_unknown_names_fail_with_close_matches(name, expected):
    with pytest.raises(StudentError, match=expected) as info:
        build_student(name, C + Q)
    assert "\n" not in str(info.value)


def test_available_students_lists_every_source_once_local_first():
    names = available_students()
    assert names[: len(LOCAL)] == sorted(LOCAL)
    assert len(names) == len(set(names))
    assert {"resnet18", "EfficientNet", "efficientnet_b0", "convnext_atto", "mobilenet_v3_small"} <= set(names)
    assert {"ResNet50", "MobileNetV2", "ShuffleV1", "vgg8"} <= set(names)  # mdistiller's table names
    assert len(names) > len(torchvision.models.list_models(module=torchvision.models)) + len(LOCAL)


# ---------------------------------------------------------------- bad values and refused heads


@pytest.mark.parametrize("num_outputs", [0, -3, 2.5, True])
def test_num_outputs_must_be_a_positive_int(num_outputs):
    with pytest.raises(StudentError, match=r"num_outputs must be a positive int \(C \+ Q\), got"):
        build_student("resnet20", num_outputs)


def test_numpy_integer_widths_are_accepted():
    model = build_student("resnet20", np.int64(C + Q), in_chans=np.int64(3))
    assert classifier_layer(model).out_features == C + Q


def test_in_chans_must_be_a_positive_int():
    with pytest.raises(StudentError, match=r"student 'resnet20': in_chans must be a positive int, got 0"):
        build_student("resnet20", C + Q, in_chans=0)


def test_torchvision_refuses_other_channel_counts_and_points_to_timm():
    with pytest.raises(StudentError, match=r"torchvision:resnet18: torchvision models take 3 .* use timm:resnet18"):
        build_student("resnet18", C + Q, in_chans=1)


def test_conv_head_is_refused_naming_the_student():
    with pytest.raises(StudentError, match=r"student torchvision:squeezenet1_1: has no nn.Linear classifier"):
        build_student("squeezenet1_1", C + Q)


class FixedThousandHead(nn.Module):
    """The official defect: num_classes is accepted and ignored."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class BypassedHead(nn.Module):
    """Its last Linear has the right width but the logits come from another layer."""

    def __init__(self) -> None:
        super().__init__()
        self.real = nn.Linear(3, C + Q)
        self.unused = nn.Linear(3, C + Q)

    def forward(self, x):
        return self.real(x.mean(dim=(2, 3)))


class TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, C + Q)

    def forward(self, x):
        logits = self.fc(x.mean(dim=(2, 3)))
        return logits, logits


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head, self.head_dist = nn.Linear(3, C + Q), nn.Linear(3, C + Q)

    def get_classifier(self):
        return self.head, self.head_dist


@pytest.mark.parametrize(
    "model, expected",
    [
        (FixedThousandHead(C + Q), r"student demo: final Linear has 1000 outputs, expected 15 \(C \+ Q\)"),
        (BypassedHead(), r"student demo: the logits do not come from the Linear found as classifier"),
        (TupleOutput(), r"student demo: forward returns tuple, not one logits tensor"),
        (TwoHeads(), r"student demo: its classifier is a tuple of heads, not one nn.Linear"),
        (
            nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, C + Q)),
            r"student demo: dry forward on a \[1, 3, 32, 32\] input failed \(",
        ),
    ],
)
def test_check_head_catches_heads_that_are_not_c_plus_q(model, expected):
    with pytest.raises(StudentError, match=expected):
        check_head(model, C + Q, "demo", (32, 32))


# ---------------------------------------------------------------- local checkpoints


def trained_looking(name: str, num_outputs: int, **kwargs) -> nn.Module:
    """A student whose weights and BN statistics differ from any fresh build."""
    torch.manual_seed(123)
    model = build_student(name, num_outputs, **kwargs)
    model(torch.randn(4, 3, 32, 32))  # a train-mode forward moves the BN statistics
    return model


CHECKPOINT_FORMATS = {
    "raw state_dict": lambda sd: sd,
    "trainer checkpoint": lambda sd: {"model": sd, "optimizer": {"state": {}}, "epoch": 7},
    "state_dict key": lambda sd: {"state_dict": sd},
    "student export": lambda sd: {"model": sd, "student": "resnet8x4", "num_outputs": C + 3},
    "DDP prefixes": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "whole distiller": lambda sd: {"model": {f"student.{k}": v for k, v in sd.items()}},
    # yacs config + numpy RNG state are refused by torch's safe loader: exercises the full-unpickle fallback
    "with config and RNG": lambda sd: {"model": sd, "config": get_cfg(), "rng": np.random.get_state()},
}


@pytest.fixture(scope="module")
def resnet8x4_states() -> tuple[dict, dict]:
    """(state_dict saved for C + 3 outputs, state_dict of a from-scratch C + Q build with seed 0)."""
    saved = trained_looking("resnet8x4", C + 3).state_dict()  # saved for 3 aspects, reused with 5
    torch.manual_seed(0)
    return saved, build_student("resnet8x4", C + Q).state_dict()


@pytest.mark.parametrize("fmt", list(CHECKPOINT_FORMATS))
def test_pretrained_start_loads_the_backbone_and_reinitialises_the_head(tmp_path, fmt, resnet8x4_states):
    saved, fresh = resnet8x4_states
    path = tmp_path / "student.pth"
    torch.save(CHECKPOINT_FORMATS[fmt](saved), path)

    torch.manual_seed(0)
    started = build_student("ResNet8x4", C + Q, pretrained_path=str(path))

    loaded = started.state_dict()
    backbone = [k for k in saved if not k.startswith("fc.")]
    assert len(backbone) == len(loaded) - 2
    assert all(torch.equal(loaded[k], saved[k]) for k in backbone)
    assert not torch.equal(fresh["stem.0.weight"], saved["stem.0.weight"])  # so the equality above means loaded
    assert loaded["fc.weight"].shape == (C + Q, 256)
    # The head is exactly what a from-scratch build with the same seed gets, not a copy of the old head.
    assert torch.equal(loaded["fc.weight"], fresh["fc.weight"]) and torch.equal(loaded["fc.bias"], fresh["fc.bias"])
    assert started(torch.randn(2, 3, 16, 16)).shape == (2, C + Q)


def test_pretrained_start_from_a_whole_saved_module(tmp_path):
    source = trained_looking("wrn_16_2", C)
    torch.save(source, tmp_path / "module.pt")
    target = build_student("wrn_16_2", C + Q)
    loaded = load_student_weights(target, tmp_path / "module.pt", "wrn_16_2")
    assert loaded == len(source.state_dict()) - 2
    assert torch.equal(target.stages[2][1].conv2.weight, source.stages[2][1].conv2.weight)


def test_pretrained_start_from_a_library_model_skips_its_head_by_name(tmp_path):
    source = build_student("mobilenet_v3_small", C)
    torch.save(source.state_dict(), tmp_path / "mnv3.pth")
    started = build_student("mobilenet_v3_small", C + Q, pretrained_path=str(tmp_path / "mnv3.pth"))
    assert classifier_name(started) == "classifier.3"
    assert torch.equal(started.classifier[0].weight, source.classifier[0].weight)  # hidden Linear is loaded
    assert started.classifier[3].weight.shape == (C + Q, 1024)


def test_checkpoint_of_another_depth_is_refused_listing_keys(tmp_path):
    path = tmp_path / "resnet20.pth"
    torch.save({"model": build_student("resnet20", C).state_dict(), "student": "resnet20"}, path)
    with pytest.raises(StudentError) as info:
        build_student("resnet56", C + Q, pretrained_path=str(path))
    message = str(info.value)
    assert message.startswith(f"{path} does not fit student local:resnet56 (it was saved from student 'resnet20'): ")
    assert "missing (stages.0.3." in message and "and " in message and "\n" not in message


def test_checkpoint_with_other_shapes_is_refused_listing_them(tmp_path):
    path = tmp_path / "rgb.pth"
    torch.save(build_student("mobilenetv1", C).state_dict(), path)
    with pytest.raises(StudentError, match=r"1 shape mismatches \(features\.0\.0\.weight \[32, 3, 3, 3\] vs \[32, 1"):
        build_student("mobilenetv1", C + Q, pretrained_path=str(path), in_chans=1)


def test_checkpoint_with_extra_keys_is_refused(tmp_path):
    state = build_student("resnet20", C).state_dict()
    state["projector.weight"] = torch.zeros(4, 4)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(StudentError, match=r"1 unexpected \(projector\.weight\)"):
        build_student("resnet20", C + Q, pretrained_path=str(tmp_path / "extra.pth"))


def test_bad_checkpoint_files_fail_in_one_line(tmp_path):
    with pytest.raises(StudentError, match=r"student checkpoint .*nope\.pth does not exist \(fix DISTILLER"):
        build_student("resnet20", C + Q, pretrained_path=str(tmp_path / "nope.pth"))
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(StudentError, match=r"notes\.pth: not a readable torch checkpoint"):
        build_student("resnet20", C + Q, pretrained_path=str(tmp_path / "notes.pth"))
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "empty.pth")
    with pytest.raises(StudentError, match=r"empty\.pth: no state_dict found .* found \['epoch', 'optimizer'\]"):
        build_student("resnet20", C + Q, pretrained_path=str(tmp_path / "empty.pth"))
