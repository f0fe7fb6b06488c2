"""MobileNetV1 (Howard et al., 2017): depthwise-separable conv stacks, widths 32..1024, one Linear classifier.

Written here because neither torchvision nor timm ships it, and because the official MaKD code's copy ignored
`num_classes` (always 1000 outputs), so its head was never widened to C + Q. This one honours it.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.weight_init import init_conv_net

# (output channels, stride) of each depthwise-separable block after the 32-channel stem (the paper's Table 1).
SEPARABLE_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias: BN follows) -> BatchNorm -> ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def separable_block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """A 3x3 depthwise conv (carries the stride) followed by a 1x1 pointwise conv that changes the width."""
    return nn.Sequential(conv_bn_relu(in_ch, in_ch, 3, stride, groups=in_ch), conv_bn_relu(in_ch, out_ch, 1))


class MobileNetV1(nn.Module):
    """ImageNet MobileNetV1 at width 1.0: x [B, in_chans, H, W] -> logits [B, num_classes]; any H, W >= 1.

    Total stride 32, global average pooling, then `fc` (1024 -> num_classes): about 4.2M parameters for 1000
    classes.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        layers = [conv_bn_relu(in_chans, 32, 3, stride=2)]
        width = 32
        for out_ch, stride in SEPARABLE_BLOCKS:
            layers.append(separable_block(width, out_ch, stride))
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


@LOCAL_STUDENTS.register("mobilenetv1")
def mobilenetv1(num_classes: int, in_chans: int = 3) -> MobileNetV1:
    """MobileNetV1 width 1.0 (the paper's MobileNet-V1 student)."""
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans)
