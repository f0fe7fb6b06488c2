"""VGG with batch norm for 32-px inputs (Simonyan & Zisserman, 2015), the CIFAR variant of the KD literature.

Five blocks of 3x3 conv (with bias) -> BN -> ReLU, a 2x2 max pool after each of the first four and global
average pooling after the last, then one Linear 512 -> num_classes (no fully connected stack). Block widths
64-128-256-512-512; the number of convs per block gives the depth (vgg8 has one conv per block, as in CRD).
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.weight_init import init_conv_net

WIDTHS = (64, 128, 256, 512, 512)
# name -> convs per block; names are prefixed cifar_ because torchvision's vgg11/13/16/19 are the ImageNet nets.
CONVS_PER_BLOCK: dict[str, tuple[int, int, int, int, int]] = {
    "cifar_vgg8": (1, 1, 1, 1, 1),
    "cifar_vgg11": (1, 1, 2, 2, 2),
    "cifar_vgg13": (2, 2, 2, 2, 2),
    "cifar_vgg16": (2, 2, 3, 3, 3),
    "cifar_vgg19": (2, 2, 4, 4, 4),
}


class CifarVGG(nn.Module):
    """x [B, in_chans, H, W] -> logits [B, num_classes]; total stride 16 before the global average pool."""

    def __init__(self, convs_per_block: tuple[int, ...], num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_chans
        for block, (out_ch, convs) in enumerate(zip(WIDTHS, convs_per_block)):
            for _ in range(convs):
                layers += [nn.Conv2d(width, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
                width = out_ch
            if block < len(WIDTHS) - 1:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)
        init_conv_net(self)

    def get_classifier(self) -> nn.Linear:
        """The final Linear [num_features -> num_classes]."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] (H, W >= 16) -> logits [B, num_classes]."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _register(name: str, convs: tuple[int, ...]) -> None:
    def build(num_classes: int, in_chans: int = 3) -> CifarVGG:
        return CifarVGG(convs, num_classes, in_chans)

    build.__name__ = name
    build.__doc__ = f"CIFAR VGG-{sum(convs) + 3} with BN ({sum(convs)} convs + the classifier)."
    LOCAL_STUDENTS.register(name)(build)


for _name, _convs in CONVS_PER_BLOCK.items():
    _register(_name, _convs)
