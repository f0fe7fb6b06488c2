"""Shared by the tests of the feature-based methods: a tiny student/teacher pair, a fixed batch, and the networks'
features computed by hand (calling their modules one by one), so a test's expected loss never goes through
makd.models.features or the method's own code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher

C = 5  # classes of the tiny pair
SIZE = 16  # image side: resnet8 stages at 16, 8 and 4 px


def tiny_pair(student: str = "resnet8", teacher: str = "resnet14", seed: int = 0):
    """(student in train mode, frozen ClassLogitsTeacher in eval mode), CIFAR ResNets with C outputs."""
    torch.manual_seed(seed)
    net = build_student(student, C, input_family="cifar")
    teacher_net = build_student(teacher, C, input_family="cifar")
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters for the frozen teacher
        for module in teacher_net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.train(), ClassLogitsTeacher(teacher_net, C).eval().requires_grad_(False)


def fixed_batch(batch_size: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch_size, 3, SIZE, SIZE, generator=generator),
        "label": torch.randint(0, C, (batch_size,), generator=generator),
        "index": torch.arange(batch_size),
    }


@dataclass
class Maps:
    stem: torch.Tensor
    stages: list[torch.Tensor]
    preact: list[torch.Tensor]
    pooled: torch.Tensor
    logits: torch.Tensor


def _basic_block(block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-activation, output) of a makd CIFAR ResNet BasicBlock, computed from its layers."""
    out = F.relu(block.bn1(block.conv1(x)))
    pre = block.bn2(block.conv2(out)) + block.shortcut(x)
    return pre, F.relu(pre)


def cifar_resnet_maps(net, x: torch.Tensor) -> Maps:
    """Every map of a makd CIFAR ResNet (CifarResNet), by hand; in the network's current train/eval mode."""
    stem = F.relu(net.stem[1](net.stem[0](x)))
    h, stages, preact = stem, [], []
    for stage in net.stages:
        for block in stage:
            pre, h = _basic_block(block, h)
        stages.append(h)
        preact.append(pre)
    pooled = h.mean(dim=(2, 3))
    return Maps(stem, stages, preact, pooled, F.linear(pooled, net.fc.weight, net.fc.bias))


def batch_norm_train(x: torch.Tensor, bn) -> torch.Tensor:
    """BatchNorm2d in training mode by hand: batch mean and biased variance per channel, then the affine map."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def cross_entropy_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -log_p[torch.arange(len(labels)), labels].mean()
