"""mdistiller's student / teacher names: the CIFAR family's published sizes and shapes, and the by-dataset tables."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from mirrors import mirror
from torch import nn

from makd.config import get_cfg
from makd.models import StudentError, build_student, input_family_of, resolve_student_name
from makd.models.cifar_resnet_four_stage import FourStageCifarResNet
from makd.models.names import CIFAR_TABLE, IMAGENET_TABLE, StudentSpec

MDISTILLER_MIRROR = mirror("megvii-research/mdistiller")
MAKD_MIRROR = mirror("taegyeong-lee/MaKD-Multi-aspect-knowledge-distillation-with-Large-Language-Model")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Parameters for 100 classes, in millions, as the KD literature tabulates them (CRD, Tian et al. 2020, Table 1
# and its appendix; DKD, Zhao et al. 2022), under mdistiller's CIFAR-table names.
PUBLISHED_MILLIONS = [
    ("resnet20", 0.28),
    ("resnet32", 0.47),
    ("resnet56", 0.86),
    ("resnet110", 1.73),
    ("resnet8x4", 1.23),
    ("resnet32x4", 7.43),
    ("wrn_16_2", 0.70),
    ("wrn_40_1", 0.57),
    ("wrn_40_2", 2.25),
    ("vgg8", 3.96),
    ("vgg13", 9.46),
    ("MobileNetV2", 0.81),
    ("ShuffleV1", 0.95),
    ("ShuffleV2", 1.36),
    ("ResNet50", 23.7),
]


@pytest.mark.parametrize("name, millions", PUBLISHED_MILLIONS)
def test_cifar_table_names_have_the_published_parameter_counts(name, millions):
    model = build_student(name, 100, input_family="cifar")
    assert parameter_count(model) / 1e6 == pytest.approx(millions, rel=0.015)


def _feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tensor the global pool receives (the last feature map)."""
    seen = []
    hook = model.pool.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    with torch.no_grad():
        model.eval()(x)
    hook.remove()
    return seen[0]


@pytest.mark.parametrize(
    "name, channels, side",
    [
        ("vgg8", 512, 2),  # four 2x2 max pools
        ("MobileNetV2", 1280, 2),  # stem stride 2 + three stride-2 stages; last conv stays 1280 at width 0.5
        ("ShuffleV1", 960, 4),  # three stride-2 stages, 1x1 stem
        ("ShuffleV2", 1024, 4),
        ("ResNet18", 512, 4),  # 3x3 stride-1 stem, no max pool
        ("resnet8x4", 256, 8),
        ("wrn_40_1", 64, 8),
    ],
)
def test_cifar_nets_reach_the_documented_last_feature_map_at_32_px(name, channels, side):
    model = build_student(name, 7, input_family="cifar")
    assert tuple(_feature_map(model, torch.zeros(1, 3, 32, 32)).shape) == (1, channels, side, side)


def test_cifar_structures_follow_the_papers():
    vgg13 = build_student("vgg13", 7, input_family="cifar")
    convs = [m for m in vgg13.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(c.bias is not None for c in convs)  # 10 convs + 1 Linear = 13 weight layers
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg13.modules()) == 10
    mobile = build_student("MobileNetV2", 7, input_family="cifar")
    blocks = [m for m in mobile.modules() if type(m).__name__ == "InvertedResidual"]
    assert len(blocks) == 1 + 2 + 3 + 4 + 3 + 3 + 1
    assert sum(b.residual for b in blocks) == 10  # every block after a stage's first, except in the 1-block stages
    resnet50 = build_student("ResNet50", 7, input_family="cifar")
    assert [len(stage) for stage in resnet50.stages] == [3, 4, 6, 3]
    assert resnet50.stem[0].stride == (1, 1) and resnet50.fc.in_features == 2048


def test_resnet50_is_the_cifar_net_for_cifar_inputs_and_torchvision_for_imagenet_inputs():
    assert isinstance(build_student("ResNet50", 7, input_family="cifar"), FourStageCifarResNet)
    imagenet = build_student("ResNet18", 7, input_family="imagenet")  # ResNet18: the same table, 5x cheaper
    assert isinstance(imagenet, torchvision.models.ResNet) and imagenet.conv1.stride == (2, 2)
    assert resolve_student_name("ResNet50", "imagenet") == StudentSpec("torchvision", "resnet50")
    assert resolve_student_name("ResNet50") == StudentSpec("torchvision", "resnet50")  # the default family
    # vgg13 likewise: CIFAR VGG-13 with BN vs torchvision's ImageNet VGG-13 (no BN, 3 Linear layers).
    assert resolve_student_name("vgg13", "cifar") == StudentSpec("local", "cifar_vgg13")
    assert resolve_student_name("vgg13", "imagenet") == StudentSpec("torchvision", "vgg13")


def test_every_table_name_resolves_in_its_family():
    for name, local in CIFAR_TABLE.items():
        assert resolve_student_name(name, "cifar") == StudentSpec("local", local)
    for name, (source, model) in IMAGENET_TABLE.items():
        assert resolve_student_name(name, "imagenet") == StudentSpec(source, model)
    # A forced source ignores the family; names only one table has still resolve in the other family.
    assert resolve_student_name("torchvision:ResNet50", "cifar") == StudentSpec("torchvision", "resnet50")
    assert resolve_student_name("local:vgg8", "imagenet") == StudentSpec("local", "cifar_vgg8")
    assert resolve_student_name("MobileNetV1", "cifar") == StudentSpec("local", "mobilenetv1")
    assert resolve_student_name("ShuffleV2", "imagenet") == StudentSpec("local", "shufflev2")


@pytest.mark.parametrize(
    "name, family, first",
    [
        ("ShuffleV3", "cifar", ["'ShuffleV2'", "'ShuffleV1'"]),  # the family's names before torchvision's shufflenet
        ("MobileNetV2", "imagenet", ["'mobilenet_v2'"]),  # mdistiller's ImageNet table has no MobileNetV2
        ("resnet19", "cifar", ["'ResNet18'"]),
        ("wrn_40_3", "cifar", ["'wrn_40_2'", "'wrn_40_1'"]),
    ],
)
def test_a_miss_suggests_names_of_the_same_input_family_first(name, family, first):
    with pytest.raises(StudentError) as info:
        resolve_student_name(name, family)
    message = str(info.value)
    assert f"unknown student {name!r} for {family} inputs; did you mean {', '.join(first)}" in message
    assert "\n" not in message


def test_unknown_input_family_is_refused():
    with pytest.raises(StudentError, match=r"input family 'tiny' is unknown; use one of cifar, imagenet"):
        build_student("resnet20", 7, input_family="tiny")


@pytest.mark.parametrize(
    "settings, family",
    [
        ({"DATASET.TYPE": "cifar100"}, "cifar"),  # mdistiller's CIFAR table, whatever IMAGE_SIZE says
        ({"DATASET.TYPE": "tiny_imagenet"}, "cifar"),
        ({"DATASET.TYPE": "image_folder", "DATASET.IMAGE_SIZE": 64}, "cifar"),
        ({"DATASET.TYPE": "image_folder", "DATASET.IMAGE_SIZE": 96}, "imagenet"),
        ({"DATASET.TYPE": "oxfordpets"}, "imagenet"),
        ({"DATASET.TYPE": "imagenet"}, "imagenet"),
    ],
)
def test_input_family_of_a_config(settings, family):
    cfg = get_cfg()
    cfg.merge_from_list([item for pair in settings.items() for item in pair])
    assert input_family_of(cfg) == family


def _mirror_yaml(mirror: Path, folder: str) -> dict[str, dict]:
    if not mirror.is_dir():
        pytest.skip(f"no mirror at {mirror}")
    names = subprocess.run(
        ["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", "HEAD", folder],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    texts = {}
    for name in names:
        if name.endswith(".yaml"):
            show = subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:{name}"], capture_output=True, text=True)
            texts[name] = yaml.safe_load(show.stdout) or {}
    return texts


def test_every_official_student_and_teacher_name_resolves_in_its_dataset_family():
    configs = _mirror_yaml(MAKD_MIRROR, "configs")
    assert len(configs) == 54
    resolved = {}
    for path, data in configs.items():
        dataset = (data.get("DATASET") or {}).get("TYPE") or path.split("/")[1]  # cifar100 files name none
        family = "cifar" if dataset in ("cifar100", "tiny_imagenet") else "imagenet"
        for role in ("STUDENT", "TEACHER"):
            name = (data.get("DISTILLER") or {}).get(role)
            if name:
                resolved[(name, family)] = resolve_student_name(name, family)
    assert resolved[("ResNet50", "cifar")] == StudentSpec("local", "cifar_resnet50")
    assert resolved[("ResNet50", "imagenet")] == StudentSpec("torchvision", "resnet50")
    assert resolved[("MobileNetV2", "cifar")] == StudentSpec("local", "cifar_mobilenetv2")
    assert all(spec.source == "local" for (_, family), spec in resolved.items() if family == "cifar")
    assert len(resolved) == 20


def test_mdistiller_cifar_table_names_are_all_covered():
    """Every key of mdistiller's cifar_model_dict (read from its models/cifar/__init__.py) is a CIFAR_TABLE name."""
    if not MDISTILLER_MIRROR.is_dir():
        pytest.skip(f"no mirror at {MDISTILLER_MIRROR}")
    text = subprocess.run(
        ["git", "-C", str(MDISTILLER_MIRROR), "show", "HEAD:mdistiller/models/cifar/__init__.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = text.split("cifar_model_dict = {", 1)[1].split("\n}", 1)[0]
    keys = {line.strip().split('"')[1] for line in table.splitlines() if line.strip().startswith('"')}
    assert len(keys) == 23
    assert keys <= set(CIFAR_TABLE)
