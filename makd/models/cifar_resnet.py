"""CIFAR-style ResNets for 32-px inputs (He et al., 2016, Sec. 4.2), the sizes common in the KD literature.

resnet8/14/20/32/44/56/110: a 16-channel 3x3 stem, three stages of 16-32-64 channels with n = (depth - 2) / 6
basic blocks each.
resnet8x4/32x4: the same layout four times wider (32-channel stem, stages 64-128-256), as in CRD and mdistiller.
Shortcuts are 1x1 conv + BN wherever the shape changes. Adaptive pooling lets any input size through.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.weight_init import init_conv_net


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the shortcut, ReLU after the sum (post-activation)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; spatial stride 4 overall (stages at strides 1, 2, 2).

    depth: 6n + 2 (n blocks per stage); widths: (stem, stage1, stage2, stage3) channels.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth {depth} is not 6n + 2 with n >= 1 (e.g. 20, 32, 56, 110)")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 1, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)
        )
        stages, width = [], widths[0]
        for index, out_ch in enumerate(widths[1:]):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(width, out_ch, stride))
                width = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] -> logits [B, num_classes]."""
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


NARROW = (16, 16, 32, 64)
WIDE_X4 = (32, 64, 128, 256)


def _register(name: str, depth: int, widths: tuple[int, int, int, int], params: str) -> None:
    def build(num_classes: int, in_chans: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_chans)

    build.__name__ = name
    build.__doc__ = f"CIFAR ResNet-{depth} (stage widths {widths[1:]}): about {params} parameters for 100 classes."
    LOCAL_STUDENTS.register(name)(build)


# name -> (depth, widths, parameters for 100 classes as published by CRD / mdistiller); the counts are tested.
CIFAR_RESNETS: dict[str, tuple[int, tuple[int, int, int, int], str]] = {
    "resnet8": (8, NARROW, "0.08M"),
    "resnet14": (14, NARROW, "0.18M"),
    "resnet20": (20, NARROW, "0.28M"),
    "resnet32": (32, NARROW, "0.47M"),
    "resnet44": (44, NARROW, "0.67M"),
    "resnet56": (56, NARROW, "0.86M"),
    "resnet110": (110, NARROW, "1.74M"),
    "resnet8x4": (8, WIDE_X4, "1.23M"),
    "resnet32x4": (32, WIDE_X4, "7.43M"),
}
for _name, (_depth, _widths, _params) in CIFAR_RESNETS.items():
    _register(_name, _depth, _widths, _params)
