"""Channel shuffle (Zhang et al., ShuffleNet, 2018): lets information cross the groups of grouped convolutions."""

import torch


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """x [B, C, H, W] with C = groups * k -> the same shape, channel g * k + i moved to i * groups + g."""
    batch, channels, height, width = x.shape
    return (
        x.view(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(batch, channels, height, width)
    )
