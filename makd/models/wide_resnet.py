"""Wide ResNets for 32-px inputs (Zagoruyko & Komodakis, 2016): WRN-depth-k with pre-activation blocks.

n = (depth - 4) / 6 blocks per stage, stages of 16k-32k-64k channels after a 16-channel stem, no dropout.
Adaptive pooling lets any input size through.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.weight_init import init_conv_net


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; where the shape changes, a 1x1 conv shortcut reads the pre-activated input."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        # The identity path keeps the raw input; a projection path uses the normalised one (as in the WRN paper).
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; depth 6n + 4, widening factor k."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth {depth} is not 6n + 4 with n >= 1 (e.g. 16, 28, 40)")
        blocks_per_stage = (depth - 4) // 6
        self.stem = nn.Conv2d(in_chans, 16, 3, 1, padding=1, bias=False)
        stages, width = [], 16
        for index, out_ch in enumerate((16 * widen, 32 * widen, 64 * widen)):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(PreActBlock(width, out_ch, stride))
                width = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end on a conv, so the last BN-ReLU comes before pooling.
        self.final_act = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] -> logits [B, num_classes]."""
        features = self.final_act(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(features), 1))


def _register(depth: int, widen: int, params: str) -> None:
    name = f"wrn_{depth}_{widen}"

    def build(num_classes: int, in_chans: int = 3) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_chans)

    build.__name__ = name
    build.__doc__ = f"WRN-{depth}-{widen}: about {params} parameters for 100 classes."
    LOCAL_STUDENTS.register(name)(build)


# (depth, widening factor, parameters for 100 classes as published by CRD / mdistiller); the counts are tested.
WIDE_RESNETS: tuple[tuple[int, int, str], ...] = (
    (16, 1, "0.18M"),
    (16, 2, "0.70M"),
    (40, 1, "0.57M"),
    (40, 2, "2.26M"),
)
for _depth, _widen, _params in WIDE_RESNETS:
    _register(_depth, _widen, _params)
