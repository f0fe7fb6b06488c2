"""Batch-level class-target recipes: label smoothing, mixup and CutMix (DATASET.AUGMENT), as a collate function.

`BatchMixer(samples)` collates a list of dataset items like torch's default_collate, then:

- class targets: when smoothing or mixing is on, "label" becomes a distribution [B, C] float
  ((1 - e) * one_hot + e / C, then mixed), which F.cross_entropy takes as is (soft-target CE equals
  CE with label_smoothing e); "label_index" [B] int64 keeps each image's own class for accuracy and
  for methods that need class indices. Off: "label" stays [B] int64 (today's batches, bit for bit).
- mixup: image = lam * x + (1 - lam) * x[perm]; CutMix: a box of x[perm] pasted into x, lam = kept area.
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

import numpy as np
import torch
from torch.utils.data import default_collate


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

    def _rng(self, indices: Sequence[int]) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**32, self.epoch, *(int(i) for i in indices)])

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        return self.mix(batch, self._rng(batch["index"].tolist()))

    def mix(self, batch: dict, rng: np.random.Generator) -> dict:
        """Smooth and (maybe) mix one collated batch in place of its keys; returns the batch."""
        labels = batch["label"]
        size = labels.shape[0]
        soft = torch.full((size, self.num_classes), self.label_smoothing / self.num_classes)
        soft[torch.arange(size), labels] += 1.0 - self.label_smoothing
        batch["label_index"], lam, kind, perm = labels, 1.0, None, None
        alphas = [(k, a) for k, a in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if a > 0]
        if alphas and size > 1 and rng.random() < self.mix_prob:
            kind, alpha = alphas[int(rng.integers(len(alphas)))]
            lam = float(rng.beta(alpha, alpha))
            perm = torch.from_numpy(rng.permutation(size))
            images = batch["image"]
            if kind == "mixup":
                batch["image"] = lam * images + (1.0 - lam) * images[perm]
            else:
                lam = self._paste_box(images, perm, lam, rng)
            soft = lam * soft + (1.0 - lam) * soft[perm]
            if "aspects" in batch and batch["aspects"].numel():
                batch["aspects"] = lam * batch["aspects"] + (1.0 - lam) * batch["aspects"][perm]
                if "aspect_mask" in batch:
                    batch["aspect_mask"] = batch["aspect_mask"] * batch["aspect_mask"][perm]
        batch["label"] = soft
        batch["mix_lambda"] = torch.full((size,), lam)
        batch["mix_index"] = perm if kind else torch.arange(size)
        return batch

    @staticmethod
    def _paste_box(images: torch.Tensor, perm: torch.Tensor, lam: float, rng: np.random.Generator) -> float:
        """CutMix in place: a box of area ~(1 - lam) from images[perm]; returns the exact kept fraction."""
        height, width = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        box_h, box_w = int(round(height * cut)), int(round(width * cut))
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
        left, right = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
        images[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
        return 1.0 - (bottom - top) * (right - left) / (height * width)
