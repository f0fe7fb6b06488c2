"""ShuffleNet V2 1x for 32-px inputs (Ma et al., 2018), the CIFAR variant of CRD / mdistiller ("ShuffleV2").

A 1x1 stem of 24 channels (no stride, no max pool); three stages of outputs 116-232-464, each one
down-sampling unit and then 3-7-3 basic units; a 1x1 conv to 1024 channels, global pooling, one Linear.
A basic unit splits the channels in half, passes one half through 1x1 -> 3x3 depthwise -> 1x1 and
concatenates it with the other half; a down-sampling unit runs two stride-2 branches on the whole input.
Both end with a channel shuffle of 2 groups. About 1.36M parameters for 100 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.channel_shuffle import channel_shuffle
from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.mobilenet_v1 import conv_bn_relu
from makd.models.weight_init import init_conv_net

STEM_CHANNELS = 24
STAGE_OUTPUTS = (116, 232, 464)
STAGE_BASIC_UNITS = (3, 7, 3)
LAST_CHANNELS = 1024


def depthwise_bn(channels: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv + BN, no ReLU (as in the paper's units)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride, padding=1, groups=channels, bias=False), nn.BatchNorm2d(channels)
    )


class BasicUnit(nn.Module):
    """x [B, C, H, W] -> [B, C, H, W]: half the channels pass through, the other half is transformed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(conv_bn_relu(half, half, 1), depthwise_bn(half, 1), conv_bn_relu(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, changed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([kept, self.branch(changed)], 1), 2)


class DownUnit(nn.Module):
    """x [B, in_ch, H, W] -> [B, out_ch, H / 2, W / 2]: two stride-2 branches of out_ch / 2 channels each."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        half = out_ch // 2
        self.left = nn.Sequential(depthwise_bn(in_ch, 2), conv_bn_relu(in_ch, half, 1))
        self.right = nn.Sequential(conv_bn_relu(in_ch, half, 1), depthwise_bn(half, 2), conv_bn_relu(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class CifarShuffleNetV2(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; total stride 8."""

    def __init__(self, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_chans, STEM_CHANNELS, 1)]
        width = STEM_CHANNELS
        for out_ch, units in zip(STAGE_OUTPUTS, STAGE_BASIC_UNITS):
            layers.append(DownUnit(width, out_ch))
            layers.extend(BasicUnit(out_ch) for _ in range(units))
            width = out_ch
        layers.append(conv_bn_relu(width, LAST_CHANNELS, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = LAST_CHANNELS
        self.fc = nn.Linear(LAST_CHANNELS, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] -> logits [B, num_classes]."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@LOCAL_STUDENTS.register("shufflev2")
def shufflev2(num_classes: int, in_chans: int = 3) -> CifarShuffleNetV2:
    """mdistiller's CIFAR "ShuffleV2" (1x: stage outputs 116-232-464, last conv 1024)."""
    return CifarShuffleNetV2(num_classes, in_chans)
