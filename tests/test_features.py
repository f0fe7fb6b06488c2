"""The feature contract (makd.models.features): stage shapes per family, pre-activation maps that are what the
stage's last activation reads, hooks that record nothing outside a feature pass, and unknown nets refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from makd.models import build_student
from makd.models.features import FeatureError, FeatureExtractor, feature_layout, probe_features

# (name, input family, image size) -> (stem [C, H, W], stages [C, H, W] ..., pooled D); docs/features.md lists them.
SHAPES = {
    ("resnet8x4", "cifar", 32): ((32, 32, 32), [(64, 32, 32), (128, 16, 16), (256, 8, 8)], 256),
    ("resnet32x4", "cifar", 32): ((32, 32, 32), [(64, 32, 32), (128, 16, 16), (256, 8, 8)], 256),
    ("resnet20", "cifar", 32): ((16, 32, 32), [(16, 32, 32), (32, 16, 16), (64, 8, 8)], 64),
    ("wrn_16_2", "cifar", 32): ((16, 32, 32), [(32, 32, 32), (64, 16, 16), (128, 8, 8)], 128),
    ("vgg8", "cifar", 32): ((64, 32, 32), [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)], 512),
    ("MobileNetV2", "cifar", 32): ((16, 16, 16), [(12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)], 1280),
    ("ShuffleV1", "cifar", 32): ((24, 32, 32), [(240, 16, 16), (480, 8, 8), (960, 4, 4)], 960),
    ("ShuffleV2", "cifar", 32): ((24, 32, 32), [(116, 16, 16), (232, 8, 8), (464, 4, 4)], 1024),
    ("ResNet50", "cifar", 32): ((64, 32, 32), [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)], 2048),
    ("ResNet18", "imagenet", 224): ((64, 56, 56), [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)], 512),
    ("ResNet50", "imagenet", 224): (
        (64, 56, 56),
        [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)],
        2048,
    ),
    ("MobileNetV1", "imagenet", 224): (
        (64, 112, 112),
        [(128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)],
        1024,
    ),
    ("torchvision:mobilenet_v2", "imagenet", 224): (
        (32, 112, 112),
        [(24, 56, 56), (32, 28, 28), (96, 14, 14), (320, 7, 7)],
        1280,
    ),
    ("torchvision:shufflenet_v2_x1_0", "imagenet", 224): (
        (24, 56, 56),
        [(116, 28, 28), (232, 14, 14), (464, 7, 7)],
        1024,
    ),
    ("timm:resnet18", "imagenet", 224): (
        (64, 112, 112),
        [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)],
        512,
    ),
}


@pytest.mark.parametrize("key", list(SHAPES), ids=[f"{k[0]}@{k[2]}" for k in SHAPES])
def test_stage_shapes_of_each_family(key):
    name, family, size = key
    stem, stages, pooled = SHAPES[key]
    features = probe_features(build_student(name, 10, input_family=family), size)
    assert tuple(features.stem.shape) == (1, *stem)
    assert [tuple(s.shape) for s in features.stages] == [(1, *s) for s in stages]
    assert tuple(features.pooled.shape) == (1, pooled) and tuple(features.logits.shape) == (1, 10)


@pytest.mark.parametrize(
    "name,family,size",
    [
        ("resnet8x4", "cifar", 32),
        ("vgg8", "cifar", 32),
        ("ShuffleV1", "cifar", 32),
        ("ResNet18", "cifar", 32),
        ("ResNet50", "cifar", 32),
        ("MobileNetV1", "imagenet", 64),
        ("ResNet18", "imagenet", 64),
        ("ResNet50", "imagenet", 64),
    ],
)
def test_the_preactivation_map_is_what_the_stage_activation_reads(name, family, size):
    """ReLU(pre-activation) is the stage's output, and the pre-activation has negative values: an in-place ReLU did
    not overwrite it, and it is the last call of a ReLU module the block calls several times."""
    torch.manual_seed(0)
    model = build_student(name, 5, input_family=family).eval()
    features = FeatureExtractor(model, preact=True)(torch.randn(2, 3, size, size))
    for pre, out in zip(features.preact, features.stages):
        assert pre.shape == out.shape and (pre < 0).any()
        assert torch.equal(F.relu(pre), out)


def test_maps_without_final_activation_are_their_own_preactivation():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for name in ("MobileNetV2", "wrn_16_2"):
        features = FeatureExtractor(build_student(name, 5, input_family="cifar").eval(), preact=True)(x)
        assert torch.equal(features.preact[0], features.stages[0]) and (features.stages[0] < 0).any()
    wrn = FeatureExtractor(build_student("wrn_16_2", 5, input_family="cifar").eval(), preact=True)(x)
    assert torch.equal(F.relu(wrn.preact[-1]), wrn.stages[-1])  # the last stage: after the final BN-ReLU


def test_features_are_the_networks_own_intermediate_values():
    """The extractor neither changes the logits nor copies the model: stages and pooled recomputed by hand."""
    torch.manual_seed(0)
    model = build_student("resnet8x4", 7, input_family="cifar").eval()
    x = torch.randn(3, 3, 32, 32)
    features = FeatureExtractor(model)(x)
    with torch.no_grad():
        h = model.stem(x)
        assert torch.equal(features.stem, h)
        for stage, got in zip(model.stages, features.stages):
            h = stage(h)
            assert torch.equal(got, h)
        pooled = torch.flatten(model.pool(h), 1)
        assert torch.equal(features.pooled, pooled)
        assert torch.equal(features.logits, model(x)) and torch.equal(features.logits, model.fc(pooled))


def test_gradients_flow_through_the_features_and_hooks_record_nothing_outside_a_pass():
    model = build_student("resnet8", 3, input_family="cifar")
    extractor = FeatureExtractor(model, preact=True)
    features = extractor(torch.randn(4, 3, 32, 32))
    features.stages[1].pow(2).mean().backward()
    assert model.stem[0].weight.grad is not None and model.fc.weight.grad is None
    model(torch.randn(2, 3, 32, 32))  # a plain forward (evaluation) keeps nothing
    assert extractor._outputs == {} and extractor._preacts == {}
    extractor.remove()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_batchnorms_feeding_each_stage_activation():
    """OFD's margins come from these: the BatchNorm whose output the stage's last ReLU reads."""
    model = build_student("resnet32x4", 5, input_family="cifar")
    norms = FeatureExtractor(model).norms()
    assert norms == [stage[-1].bn2 for stage in model.stages]
    r50 = build_student("ResNet50", 5, input_family="imagenet")
    assert FeatureExtractor(r50).norms() == [getattr(r50, f"layer{i}")[-1].bn3 for i in range(1, 5)]
    with pytest.raises(FeatureError, match=r"wrn_16_2 \(makd Wide ResNet\): no single BatchNorm"):
        FeatureExtractor(build_student("wrn_16_2", 5, input_family="cifar"), label="wrn_16_2").norms()


def test_architectures_without_a_layout_or_preactivation_are_refused_in_one_line():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(FeatureError) as info:
        feature_layout(Plain(), "student Plain")
    assert str(info.value).startswith("student Plain: makd does not know where the stages of a Plain end")
    assert "\n" not in str(info.value)
    with pytest.raises(FeatureError, match=r"^student \(makd CIFAR ShuffleNetV2\): its stages have no pre-activation"):
        FeatureExtractor(build_student("ShuffleV2", 5, input_family="cifar"), preact=True, label="student")
