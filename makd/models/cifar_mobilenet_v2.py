"""MobileNetV2 for 32-px inputs (Sandler et al., 2018), the CIFAR variant of CRD / mdistiller ("MobileNetV2").

Inverted residual blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection, ReLU, residual when the shape
is kept) with the paper's (t, c, n, s) table, except that the 24-channel stage keeps stride 1 so a 32-px input
ends at 2x2. mdistiller's CIFAR student is expansion 6 at width 0.5 (stem 16 channels, last conv 1280):
about 0.81M parameters for 100 classes. Every block has its expansion conv, the t = 1 block too, as there.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.mobilenet_v1 import conv_bn_relu
from makd.models.weight_init import init_conv_net

# (expansion, output channels at width 1, blocks, stride of the first block); expansion None = the net's T.
STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
LAST_CHANNELS = 1280  # kept at width <= 1, scaled above


class InvertedResidual(nn.Module):
    """x [B, in_ch, H, W] -> [B, out_ch, H / stride, W / stride]; identity added when stride 1 and in_ch == out_ch."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.body = nn.Sequential(
            conv_bn_relu(in_ch, hidden, 1),
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),  # linear bottleneck: no ReLU after the projection
        )
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class CifarMobileNetV2(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; total stride 16 (stem 2, then three stride-2 stages)."""

    def __init__(self, num_classes: int, expansion: int = 6, width: float = 0.5, in_chans: int = 3) -> None:
        super().__init__()
        channels = int(32 * width)
        layers: list[nn.Module] = [conv_bn_relu(in_chans, channels, 3, stride=2)]
        for stage_expansion, out_at_width_1, blocks, stride in STAGES:
            out_ch = int(out_at_width_1 * width)
            for block in range(blocks):
                t = expansion if stage_expansion is None else stage_expansion
                layers.append(InvertedResidual(channels, out_ch, stride if block == 0 else 1, t))
                channels = out_ch
        last = int(LAST_CHANNELS * width) if width > 1.0 else LAST_CHANNELS
        layers.append(conv_bn_relu(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = last
        self.fc = nn.Linear(last, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] -> logits [B, num_classes]."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@LOCAL_STUDENTS.register("cifar_mobilenetv2")
def cifar_mobilenetv2(num_classes: int, in_chans: int = 3) -> CifarMobileNetV2:
    """mdistiller's CIFAR "MobileNetV2": expansion 6, width 0.5."""
    return CifarMobileNetV2(num_classes, expansion=6, width=0.5, in_chans=in_chans)
