"""Four-stage ResNets for 32-px inputs (He et al., 2016 block layouts, the CIFAR stem of CRD / mdistiller).

The ImageNet stage layout (64-128-256-512 channels; [2,2,2,2] basic blocks for ResNet18, [3,4,6,3]
bottlenecks of expansion 4 for ResNet50) behind a 3x3 stride-1 stem without max pool, so a 32-px input
ends at 4x4. mdistiller's CIFAR table calls these "ResNet18" and "ResNet50" (the teacher of MobileNetV2);
about 11.2M and 23.7M parameters for 100 classes. Shortcuts are 1x1 conv + BN where the shape changes.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.cifar_resnet import BasicBlock
from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.weight_init import init_conv_net

STAGE_WIDTHS = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand to 4x width, each with BN; ReLU after the sum."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class FourStageCifarResNet(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; stages at strides 1, 2, 2, 2 (total stride 8)."""

    def __init__(
        self, bottleneck: bool, blocks: tuple[int, int, int, int], num_classes: int, in_chans: int = 3
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 64, 3, 1, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
        )
        stages, channels = [], 64
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks)):
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                if bottleneck:
                    layers.append(Bottleneck(channels, width, stride))
                    channels = width * Bottleneck.expansion
                else:
                    layers.append(BasicBlock(channels, width, stride))
                    channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] -> logits [B, num_classes]."""
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


# local name -> (bottleneck blocks?, blocks per stage); prefixed cifar_ because torchvision's resnet18/50 exist.
FOUR_STAGE_RESNETS: dict[str, tuple[bool, tuple[int, int, int, int]]] = {
    "cifar_resnet18": (False, (2, 2, 2, 2)),
    "cifar_resnet34": (False, (3, 4, 6, 3)),
    "cifar_resnet50": (True, (3, 4, 6, 3)),
    "cifar_resnet101": (True, (3, 4, 23, 3)),
}


def _register(name: str, bottleneck: bool, blocks: tuple[int, int, int, int]) -> None:
    def build(num_classes: int, in_chans: int = 3) -> FourStageCifarResNet:
        return FourStageCifarResNet(bottleneck, blocks, num_classes, in_chans)

    build.__name__ = name
    build.__doc__ = f"32-px ResNet with {'bottleneck' if bottleneck else 'basic'} blocks {blocks}."
    LOCAL_STUDENTS.register(name)(build)


for _name, (_bottleneck, _blocks) in FOUR_STAGE_RESNETS.items():
    _register(_name, _bottleneck, _blocks)
