"""ShuffleNet V1 for 32-px inputs (Zhang et al., 2018), the CIFAR variant of CRD / mdistiller ("ShuffleV1").

A 1x1 stem of 24 channels (no stride, no max pool), three stages of 4-8-4 bottlenecks at groups g = 3 with
outputs 240-480-960. A bottleneck: grouped 1x1 conv to a quarter of its branch's output width, channel shuffle, 3x3
depthwise conv (carries the stride), grouped 1x1 conv; a stride-2 unit concatenates a 3x3 average-pooled
shortcut instead of adding it. The first grouped conv after the stem is ungrouped (24 channels are too few).
About 0.95M parameters for 100 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.channel_shuffle import channel_shuffle
from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.weight_init import init_conv_net

STEM_CHANNELS = 24
STAGE_OUTPUTS = (240, 480, 960)
STAGE_BLOCKS = (4, 8, 4)
GROUPS = 3


class ShuffleUnitV1(nn.Module):
    """x [B, in_ch, H, W] -> [B, out_ch, H / stride, W / stride] (stride 2: out_ch includes the in_ch shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        mid = branch_out // 4  # a quarter of the branch's own output, as in CRD's ShuffleV1
        self.first_groups = 1 if in_ch == STEM_CHANNELS else groups
        self.reduce = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, groups=self.first_groups, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.expand = nn.Sequential(
            nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False), nn.BatchNorm2d(branch_out)
        )
        self.shortcut: nn.Module = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.reduce(x), self.first_groups)
        out = self.expand(self.depthwise(out))
        shortcut = self.shortcut(x)
        return self.relu(torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut)


class CifarShuffleNetV1(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; total stride 8."""

    def __init__(self, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, STEM_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        ]
        width = STEM_CHANNELS
        for out_ch, blocks in zip(STAGE_OUTPUTS, STAGE_BLOCKS):
            for block in range(blocks):
                layers.append(ShuffleUnitV1(width, out_ch, 2 if block == 0 else 1, GROUPS))
                width = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] -> logits [B, num_classes]."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@LOCAL_STUDENTS.register("shufflev1")
def shufflev1(num_classes: int, in_chans: int = 3) -> CifarShuffleNetV1:
    """mdistiller's CIFAR "ShuffleV1" (g = 3, stage outputs 240-480-960)."""
    return CifarShuffleNetV1(num_classes, in_chans)
