"""The feature contract: the intermediate features a feature-based distiller reads from a student or a CNN teacher.

A network's forward returns logits only; `FeatureExtractor(model)` runs it once and also returns, through forward
hooks on the network's own modules (never a copy of the model):

    Features.logits   [B, K]              the model's output
    Features.stem     [B, C0, H0, W0]     the input of the first stage (after the stem)
    Features.stages   S x [B, Ci, Hi, Wi] each stage's output, after its last activation, shallow to deep
    Features.preact   S x [B, Ci, Hi, Wi] the same maps before that activation (asked with preact=True)
    Features.pooled   [B, D]              the input of the final Linear (the pooled feature)

mdistiller's "feats" list is [stem, *stages] and its "preact_feats" the same before the activations; methods
that used feats[1:] use `stages` here. Where a stage ends on no activation (a linear bottleneck, a pre-activation
block) its pre-activation map is its output. Which modules hold these is the architecture's `FeatureLayout`,
found by `feature_layout(model)`: written out for the local CIFAR families and MobileNetV1, torchvision's ResNet,
ShuffleNetV2, MobileNetV2 and VGG, any timm model with `feature_info`, and (outputs only) a torchvision-style
`features` Sequential, whose stages end where the resolution halves. The stage shapes of every shipped pair are
in docs/features.md and tested.

A pre-activation map is captured by a forward pre-hook on the activation module applied last in the stage (the
last call wins: torchvision blocks call one ReLU module several times); the input is cloned when that module
works in place, since the activation then overwrites it. `FeatureLayout` also names, per stage, the BatchNorm
whose output that activation reads (OFD's margins come from its affine parameters), where it is one module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from makd.models.cifar_mobilenet_v2 import STAGES as MOBILENETV2_STAGES
from makd.models.cifar_mobilenet_v2 import CifarMobileNetV2
from makd.models.cifar_resnet import BasicBlock, CifarResNet
from makd.models.cifar_resnet_four_stage import FourStageCifarResNet
from makd.models.cifar_shufflenet_v1 import STAGE_BLOCKS as SHUFFLEV1_BLOCKS
from makd.models.cifar_shufflenet_v1 import CifarShuffleNetV1
from makd.models.cifar_shufflenet_v2 import STAGE_BASIC_UNITS as SHUFFLEV2_UNITS
from makd.models.cifar_shufflenet_v2 import CifarShuffleNetV2
from makd.models.cifar_vgg import CifarVGG
from makd.models.errors import StudentError
from makd.models.heads import classifier_layer
from makd.models.mobilenet_v1 import MobileNetV1
from makd.models.wide_resnet import WideResNet

# mdistiller's MobileNetV2 stages end after the groups of 24, 32, 96 and 320 channels (its get_bn_before_relu).
MOBILENETV2_STAGE_GROUPS = (1, 2, 4, 6)
# MobileNetV1's stages end at 128, 256, 512 and 1024 channels (features 3, 5, 11, 13), the stem at 64.
MOBILENETV1_STEM, MOBILENETV1_STAGES = 1, (3, 5, 11, 13)


class FeatureError(StudentError):
    """The intermediate features a method needs cannot be read from this architecture (one line)."""


@dataclass(frozen=True)
class StageTap:
    """Where one feature map of a network is read (dotted module paths of `model.named_modules()`).

    output: the module whose forward output is the map. preact: the activation module whose last input while
    the stage runs is the map before that activation; "" when the map has no final activation (then the
    pre-activation map is the output); None when this architecture gives none. norm: the BatchNorm2d whose
    output that activation reads, or None when there is no single one.
    """

    output: str
    preact: str | None = ""
    norm: str | None = None


@dataclass(frozen=True)
class FeatureLayout:
    """The stem and the stages of a network, and where the layout comes from (shown in messages)."""

    stem: StageTap
    stages: tuple[StageTap, ...]
    source: str

    @property
    def has_preact(self) -> bool:
        return all(tap.preact is not None for tap in self.stages)

    @property
    def has_norms(self) -> bool:
        return all(tap.norm is not None for tap in self.stages)


@dataclass
class Features:
    """One forward pass of a network with its intermediate features (shapes in the module docstring)."""

    logits: torch.Tensor
    stem: torch.Tensor
    stages: list[torch.Tensor]
    pooled: torch.Tensor
    preact: list[torch.Tensor] | None = None


# ----------------------------------------------------------------------------- layouts, one per family
def _cifar_resnet(model: CifarResNet) -> FeatureLayout:
    stages = []
    for i, stage in enumerate(model.stages):
        last = f"stages.{i}.{len(stage) - 1}"
        stages.append(StageTap(f"stages.{i}", f"{last}.relu", f"{last}.bn2"))
    return FeatureLayout(StageTap("stem", "stem.2", "stem.1"), tuple(stages), "makd CIFAR ResNet")


def _four_stage_resnet(model: FourStageCifarResNet) -> FeatureLayout:
    stages = []
    for i, stage in enumerate(model.stages):
        last = f"stages.{i}.{len(stage) - 1}"
        # BasicBlock: main branch ends on bn2; Bottleneck: on body.7 (the BatchNorm after the expanding 1x1 conv)
        norm = f"{last}.bn2" if isinstance(stage[-1], BasicBlock) else f"{last}.body.7"
        stages.append(StageTap(f"stages.{i}", f"{last}.relu", norm))
    return FeatureLayout(StageTap("stem", "stem.2", "stem.1"), tuple(stages), "makd 32-px four-stage ResNet")


def _wide_resnet(model: WideResNet) -> FeatureLayout:
    # Pre-activation blocks end on a conv: stages 1 and 2 have no final activation. The last stage's map is read
    # after the network's final BN-ReLU, as mdistiller does; no BatchNorm produces the first two maps (the next
    # block's BN reads them), so OFD's margins are not defined for them.
    last = len(model.stages) - 1
    stages = [StageTap(f"stages.{i}", "", None) for i in range(last)]
    stages.append(StageTap("final_act", "final_act.1", "final_act.0"))
    return FeatureLayout(StageTap("stem", "", None), tuple(stages), "makd Wide ResNet")


def _relu_before_pool(features: nn.Sequential) -> list[int]:
    """Indices of the ReLUs of a VGG `features` stack that end a block: before each max pool, and the last one."""
    ends = []
    for i, module in enumerate(features):
        if isinstance(module, nn.MaxPool2d) and i > 0 and isinstance(features[i - 1], nn.ReLU):
            ends.append(i - 1)
    last_relu = max(i for i, m in enumerate(features) if isinstance(m, nn.ReLU))
    if last_relu not in ends:
        ends.append(last_relu)
    return ends


def _vgg(model: nn.Module, source: str) -> FeatureLayout:
    features = model.features
    taps = [
        StageTap(
            f"features.{i}",
            f"features.{i}",
            f"features.{i - 1}" if isinstance(features[i - 1], nn.BatchNorm2d) else None,
        )
        for i in _relu_before_pool(features)
    ]
    # The first block is the stem, as in mdistiller's VGG (its feats[0]); the other four are the stages.
    return FeatureLayout(taps[0], tuple(taps[1:]), source)


def _cifar_mobilenet_v2(model: CifarMobileNetV2) -> FeatureLayout:
    counts = [blocks for _, _, blocks, _ in MOBILENETV2_STAGES]
    ends = [sum(counts[: group + 1]) for group in MOBILENETV2_STAGE_GROUPS]  # features[0] is the stem
    # Inverted residual blocks end on a linear projection (no activation); its BatchNorm is body.3.
    stages = tuple(StageTap(f"features.{i}", "", f"features.{i}.body.3") for i in ends)
    return FeatureLayout(StageTap("features.0", "features.0.2", "features.0.1"), stages, "makd CIFAR MobileNetV2")


def _cifar_shufflenet_v1(model: CifarShuffleNetV1) -> FeatureLayout:
    ends, position = [], 2  # features 0-2: the stem conv, BN, ReLU
    for blocks in SHUFFLEV1_BLOCKS:
        position += blocks
        ends.append(position)
    stages = tuple(StageTap(f"features.{i}", f"features.{i}.relu", f"features.{i}.expand.1") for i in ends)
    return FeatureLayout(StageTap("features.2", "features.2", "features.1"), stages, "makd CIFAR ShuffleNetV1")


def _cifar_shufflenet_v2(model: CifarShuffleNetV2) -> FeatureLayout:
    ends, position = [], 0  # features 0: the stem
    for units in SHUFFLEV2_UNITS:
        position += 1 + units  # one down-sampling unit, then the basic units
        ends.append(position)
    # A unit activates one half of its channels inside a branch, then concatenates and shuffles: no single
    # module's input is the stage's pre-activation map.
    stages = tuple(StageTap(f"features.{i}", None, None) for i in ends)
    return FeatureLayout(StageTap("features.0", "features.0.2", "features.0.1"), stages, "makd CIFAR ShuffleNetV2")


def _mobilenet_v1(model: MobileNetV1) -> FeatureLayout:
    def tap(i: int) -> StageTap:  # a separable block ends on its pointwise conv -> BN -> ReLU
        return StageTap(f"features.{i}", f"features.{i}.1.2", f"features.{i}.1.1")

    return FeatureLayout(tap(MOBILENETV1_STEM), tuple(tap(i) for i in MOBILENETV1_STAGES), "makd MobileNetV1")


def _torchvision_resnet(model: torchvision.models.ResNet) -> FeatureLayout:
    stages = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(model, name)
        last = f"{name}.{len(layer) - 1}"
        bottleneck = isinstance(layer[-1], torchvision.models.resnet.Bottleneck)
        # torchvision's blocks call one ReLU module 2 (basic) or 3 (bottleneck) times: the last call is the final one
        stages.append(StageTap(name, f"{last}.relu", f"{last}.bn3" if bottleneck else f"{last}.bn2"))
    return FeatureLayout(StageTap("maxpool", None, None), tuple(stages), "torchvision ResNet")


def _torchvision_shufflenet_v2(model: torchvision.models.ShuffleNetV2) -> FeatureLayout:
    stages = tuple(StageTap(name, None, None) for name in ("stage2", "stage3", "stage4"))
    return FeatureLayout(StageTap("maxpool", None, None), stages, "torchvision ShuffleNetV2")


def _torchvision_mobilenet_v2(model: torchvision.models.MobileNetV2) -> FeatureLayout:
    # The same stage ends as the CIFAR variant: after the 24-, 32-, 96- and 320-channel groups (features 3, 6, 13,
    # 17); torchvision's inverted residual ends on conv.3 (BatchNorm of the linear projection) except t = 1 blocks.
    ends = (3, 6, 13, 17)
    stages = tuple(StageTap(f"features.{i}", "", f"features.{i}.conv.3") for i in ends)
    return FeatureLayout(StageTap("features.0", "features.0.2", "features.0.1"), stages, "torchvision MobileNetV2")


def _timm(model: nn.Module) -> FeatureLayout:
    info = model.feature_info
    modules = [entry["module"] for entry in (info.get_dicts() if hasattr(info, "get_dicts") else info)]
    stem, stages = modules[0], modules[1:]
    return FeatureLayout(
        StageTap(stem, None, None), tuple(StageTap(m, None, None) for m in stages), "timm feature_info"
    )


def _features_sequential(model: nn.Module) -> FeatureLayout:
    """Any network with a `features` Sequential (torchvision MobileNetV3, EfficientNet, ...): the last child at each
    resolution ends a stage; the first resolution's last child is the stem. Outputs only (no pre-activation)."""
    features = model.features
    sizes = []
    hooks = [child.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for child in features]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    ends = [i for i in range(len(sizes)) if i == len(sizes) - 1 or sizes[i + 1] < sizes[i]]
    taps = [StageTap(f"features.{i}", None, None) for i in ends]
    return FeatureLayout(taps[0], tuple(taps[1:]), f"{type(model).__name__} features (resolution changes)")


LAYOUTS: tuple[tuple[type, object], ...] = (
    (CifarResNet, _cifar_resnet),
    (FourStageCifarResNet, _four_stage_resnet),
    (WideResNet, _wide_resnet),
    (CifarVGG, lambda m: _vgg(m, "makd CIFAR VGG")),
    (CifarMobileNetV2, _cifar_mobilenet_v2),
    (CifarShuffleNetV1, _cifar_shufflenet_v1),
    (CifarShuffleNetV2, _cifar_shufflenet_v2),
    (MobileNetV1, _mobilenet_v1),
    (torchvision.models.ResNet, _torchvision_resnet),
    (torchvision.models.ShuffleNetV2, _torchvision_shufflenet_v2),
    (torchvision.models.MobileNetV2, _torchvision_mobilenet_v2),
    (torchvision.models.VGG, lambda m: _vgg(m, "torchvision VGG")),
)


def feature_layout(model: nn.Module, label: str = "") -> FeatureLayout:
    """Where `model`'s stem, stages (and their pre-activation maps) are; FeatureError (one line) when unknown."""
    for kind, build in LAYOUTS:
        if type(model) is kind:
            return build(model)
    if getattr(model, "feature_info", None):
        return _timm(model)
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return _features_sequential(model)
    raise FeatureError(
        f"{label or type(model).__name__}: makd does not know where the stages of a {type(model).__name__} end, "
        "so feature-based methods cannot read its features; use a ResNet, MobileNet, ShuffleNet, VGG, a CIFAR "
        "net of makd or a timm model with feature_info"
    )


# ----------------------------------------------------------------------------- the extractor
class FeatureExtractor:
    """Runs `model` and returns its Features; hooks stay on the model but record only inside `__call__`.

    preact=True also records each stage's pre-activation map (FeatureError when the layout has none).
    """

    def __init__(self, model: nn.Module, *, preact: bool = False, label: str = "") -> None:
        self.model, self.label = model, label or type(model).__name__
        self.layout = feature_layout(model, self.label)
        if preact and not self.layout.has_preact:
            raise FeatureError(
                f"{self.label} ({self.layout.source}): its stages have no pre-activation map makd can read; "
                "this method needs one (pick another architecture, or a setting that uses post-activation maps)"
            )
        self.preact = preact
        self._active = False
        self._outputs: dict[str, torch.Tensor] = {}
        self._preacts: dict[str, torch.Tensor] = {}
        self._handles = []
        modules = dict(model.named_modules())
        for tap in (self.layout.stem, *self.layout.stages):
            self._handles.append(modules[tap.output].register_forward_hook(self._keep_output(tap.output)))
            if preact and tap in self.layout.stages and tap.preact:
                module = modules[tap.preact]
                self._handles.append(module.register_forward_pre_hook(self._keep_input(tap.output, module)))
        self._handles.append(classifier_layer(model, self.label).register_forward_pre_hook(self._keep_pooled))

    def _keep_output(self, key: str):
        def hook(_module, _inputs, output):
            if self._active:
                self._outputs[key] = output

        return hook

    def _keep_input(self, key: str, module: nn.Module):
        in_place = bool(getattr(module, "inplace", False))

        def hook(_module, inputs):
            if self._active:  # the last call of the stage wins; an in-place activation would overwrite its input
                self._preacts[key] = inputs[0].clone() if in_place else inputs[0]

        return hook

    def _keep_pooled(self, _module, inputs):
        if self._active:
            self._outputs["__pooled__"] = inputs[0]

    def __call__(self, images: torch.Tensor) -> Features:
        self._outputs, self._preacts = {}, {}
        self._active = True
        try:
            logits = self.model(images)
        finally:
            self._active = False
        stages = [self._outputs[tap.output] for tap in self.layout.stages]
        preact = None
        if self.preact:
            preact = [self._preacts[tap.output] if tap.preact else out for tap, out in zip(self.layout.stages, stages)]
        features = Features(
            logits=logits,
            stem=self._outputs[self.layout.stem.output],
            stages=stages,
            pooled=self._outputs["__pooled__"].flatten(1),
            preact=preact,
        )
        self._outputs, self._preacts = {}, {}
        return features

    def norms(self) -> list[nn.BatchNorm2d]:
        """The BatchNorm2d that feeds each stage's final activation (OFD's margins); FeatureError when unknown."""
        if not self.layout.has_norms:
            raise FeatureError(
                f"{self.label} ({self.layout.source}): no single BatchNorm produces each stage's pre-activation map, "
                "so OFD's margins are not defined; use a teacher whose stages end on BatchNorm -> ReLU"
            )
        modules = dict(self.model.named_modules())
        return [modules[tap.norm] for tap in self.layout.stages]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@torch.no_grad()
def probe_features(model: nn.Module, image_size: int, *, preact: bool = False, label: str = "") -> Features:
    """Features of one zero image of `image_size` px, in eval mode (BatchNorm statistics do not move)."""
    extractor = FeatureExtractor(model, preact=preact, label=label)
    was_training = model.training
    try:
        model.eval()
        return extractor(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        extractor.remove()
