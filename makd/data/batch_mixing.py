"""Batch-level class-target recipes: label smoothing, mixup and CutMix (DATASET.AUGMENT), as a collate function.

`BatchMixer(samples)` collates a list of dataset items like torch's default_collate, then:

- class targets: when smoothing or mixing is on, "label" becomes a distribution [B, C] float
  ((1 - e) * one_hot + e / C, then mixed), which F.cross_entropy takes as is (soft-target CE equals
  CE with label_smoothing e); "label_index" [B] int64 keeps each image's own class for accuracy and
  for methods that need class indices. Off: "label" stays [B] int64 (today's batches, bit for bit).
- mixup: image = lam * x + (1 - lam) * x[perm]; CutMix: a box of x[perm] pasted into x, lam = kept area.
  The collate function only draws this (a `MixPlan` in "mix_plan"): the images are mixed after they are
  normalised, batched on the training device (makd/data/device_batch.py), as floats.
- aspect targets get the SAME lambda: aspects = lam * a + (1 - lam) * a[perm] (the raw P(yes), before
  MaKD.TEMPERATURE), and an aspect is supervised only where both images supervise it:
  aspect_mask = mask * mask[perm]. "mix_lambda" [B] records lam (1.0 for an unmixed batch) and
  "mix_index" [B] the partner's position in the batch (perm; itself when unmixed).

One lambda and one permutation per batch, drawn from a generator seeded by (SEED, epoch, the batch's
sample indices): the result does not depend on which worker collates the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import default_collate


@dataclass(frozen=True)
class MixPlan:
    """One batch's image mixing: "mixup" with `lam`, or "cutmix" pasting the partner's `box` (top, bottom, left,
    right). The partner of sample b is batch["mix_index"][b]."""

    kind: str
    lam: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)

    def apply(self, images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] -> the mixed images (a new tensor for mixup, `images` pasted in place for CutMix)."""
        if self.kind == "mixup":
            return self.lam * images + (1.0 - self.lam) * images[perm]
        top, bottom, left, right = self.box
        images[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
        return images


class BatchMixer:
    """Collate function applying label smoothing / mixup / CutMix to training batches (see module docstring)."""

    def __init__(
        self,
        num_classes: int,
        *,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.num_classes, self.label_smoothing = int(num_classes), float(label_smoothing)
        self.mixup_alpha, self.cutmix_alpha, self.mix_prob = float(mixup_alpha), float(cutmix_alpha), float(mix_prob)
        self.seed, self.epoch = int(seed), 0

    @classmethod
    def from_cfg(cls, cfg, num_classes: int) -> BatchMixer | None:
        """The mixer of DATASET.AUGMENT, or None when smoothing and mixing are all off."""
        a = cfg.DATASET.AUGMENT
        if a.LABEL_SMOOTHING == 0 and a.MIXUP_ALPHA == 0 and a.CUTMIX_ALPHA == 0:
            return None
        return cls(
            num_classes,
            label_smoothing=a.LABEL_SMOOTHING,
            mixup_alpha=a.MIXUP_ALPHA,
            cutmix_alpha=a.CUTMIX_ALPHA,
            mix_prob=a.MIX_PROB,
            seed=cfg.SEED,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def describe(self) -> dict:
        return {
            "label_smoothing": self.label_smoothing,
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "mix_prob": self.mix_prob if self.mixup_alpha or self.cutmix_alpha else None,
            "aspect_targets": "mixed with the images' lambda; supervised where both images are",
        }

    def _rng(self, indices: Sequence[int], epoch: int | None = None) -> np.random.Generator:
        epoch = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed % 2**32, epoch, *(int(i) for i in indices)])

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        # The items' epoch (AspectDataset puts it there): a persistent worker's copy of this mixer is never told.
        epoch = int(batch["epoch"][0]) if "epoch" in batch else None
        return self.mix(batch, self._rng(batch["index"].tolist(), epoch))

    def mix(self, batch: dict, rng: np.random.Generator) -> dict:
        """Smooth and (maybe) mix one collated batch in place of its keys; returns the batch.

        The class and aspect targets are mixed here; the images get the plan ("mix_plan", None when unmixed).
        """
        labels = batch["label"]
        size = labels.shape[0]
        soft = torch.full((size, self.num_classes), self.label_smoothing / self.num_classes)
        soft[torch.arange(size), labels] += 1.0 - self.label_smoothing
        batch["label_index"], lam, kind, perm, plan = labels, 1.0, None, None, None
        alphas = [(k, a) for k, a in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if a > 0]
        if alphas and size > 1 and rng.random() < self.mix_prob:
            kind, alpha = alphas[int(rng.integers(len(alphas)))]
            lam = float(rng.beta(alpha, alpha))
            perm = torch.from_numpy(rng.permutation(size))
            if kind == "mixup":
                plan = MixPlan("mixup", lam)
            else:
                plan = self._cutmix_plan(batch["image"].shape[-2:], lam, rng)
                lam = plan.lam
            soft = lam * soft + (1.0 - lam) * soft[perm]
            if "aspects" in batch and batch["aspects"].numel():
                batch["aspects"] = lam * batch["aspects"] + (1.0 - lam) * batch["aspects"][perm]
                if "aspect_mask" in batch:
                    batch["aspect_mask"] = batch["aspect_mask"] * batch["aspect_mask"][perm]
        batch["label"] = soft
        batch["mix_lambda"] = torch.full((size,), lam)
        batch["mix_index"] = perm if kind else torch.arange(size)
        batch["mix_plan"] = plan
        return batch

    @staticmethod
    def _cutmix_plan(size: Sequence[int], lam: float, rng: np.random.Generator) -> MixPlan:
        """CutMix: a box of area ~(1 - lam) from the partner; the plan's lam is the exact kept fraction."""
        height, width = int(size[0]), int(size[1])
        cut = math.sqrt(1.0 - lam)
        box_h, box_w = int(round(height * cut)), int(round(width * cut))
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
        left, right = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
        kept = 1.0 - (bottom - top) * (right - left) / (height * width)
        return MixPlan("cutmix", kept, (top, bottom, left, right))
