"""Train/test image transforms (torchvision.transforms.v2 on PIL images).

Train (`TrainTransform`, configured by DATASET.AUGMENT): a crop ("rrc" RandomResizedCrop, the CIFAR
"crop_pad" or a deterministic "resize"), an optional horizontal flip, an optional TrivialAugment /
RandAugment, normalisation, optional random erasing. It returns the image AND the view it drew (flip,
visible area), so that the aspect targets can follow the view (makd/data/views.py). It draws from
torch's global generator: AspectDataset seeds it per sample from (SEED, epoch, index).

Test: Resize(round(IMAGE_SIZE * RESIZE_RATIO)) + CenterCrop(IMAGE_SIZE). Both end in a float tensor
[3, IMAGE_SIZE, IMAGE_SIZE] normalised with MEAN/STD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from makd.config.defaults import ConfigError


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def shorter_side_size(image_size: int, resize_ratio: float) -> int:
    """Shorter side (pixels) of the test-time Resize, also the shorter side of cached images."""
    size = int(round(image_size * resize_ratio))
    if size < image_size:
        raise ConfigError(f"DATASET.RESIZE_RATIO {resize_ratio} shrinks images below IMAGE_SIZE {image_size}; use >= 1")
    return size


def border_crop_warning(image_size: int, resize_ratio: float, shorter_side: int) -> str:
    """A warning when the test pipeline cuts the borders of images that are already small, else "".

    Resize to IMAGE_SIZE * RATIO then CenterCrop(IMAGE_SIZE) drops a (1 - 1/RATIO) band of every image.
    For large photos that band is background; for images no larger than IMAGE_SIZE (digits, CIFAR,
    icons) it is part of the object, and the train crops saw it.
    """
    if resize_ratio <= 1.0 or shorter_side > image_size:
        return ""
    kept = 100.0 / resize_ratio
    return (
        f"test images are {shorter_side} px (<= DATASET.IMAGE_SIZE {image_size}) and DATASET.RESIZE_RATIO "
        f"{resize_ratio} > 1: the test CenterCrop keeps only the central {kept:.0f}% of each side; "
        "set DATASET.RESIZE_RATIO 1.0 to see the whole image"
    )


@dataclass(frozen=True)
class View:
    """What a training transform drew for one image: mirrored or not, and the visible area.

    `crop_area` is the fraction of the original image's area inside the crop (1.0 = all of it).
    """

    hflip: bool = False
    crop_area: float = 1.0

    def as_item(self) -> dict:
        return {"hflip": bool(self.hflip), "crop_area": float(self.crop_area)}


WHOLE_IMAGE = View()


@dataclass(frozen=True)
class AugmentSpec:
    """DATASET.AUGMENT as plain values (see makd/config/defaults.py for each key)."""

    crop: str = "rrc"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    hflip: bool = True
    policy: str = "none"
    randaugment_n: int = 2
    randaugment_m: int = 9
    erasing: float = 0.0

    @classmethod
    def from_cfg(cls, cfg, min_scale: float = 0.0) -> AugmentSpec:
        """The spec of `cfg`; `min_scale` raises the rrc scale floor (MaKD.SMALL_CROP bound)."""
        a = cfg.DATASET.AUGMENT
        low, high = float(a.SCALE[0]), float(a.SCALE[1])
        return cls(
            crop=a.CROP,
            scale=(min(max(low, min_scale), high), high),
            ratio=(float(a.RATIO[0]), float(a.RATIO[1])),
            pad=int(a.PAD),
            hflip=bool(a.HFLIP),
            policy=a.POLICY,
            randaugment_n=int(a.RANDAUGMENT_N),
            randaugment_m=int(a.RANDAUGMENT_M),
            erasing=float(a.ERASING),
        )

    def describe(self) -> dict:
        """JSON-ready record for summary.json (only the keys the crop mode uses)."""
        out = asdict(self)
        if self.crop != "rrc":
            out.pop("scale"), out.pop("ratio")
        if self.crop != "crop_pad":
            out.pop("pad")
        if self.policy != "randaugment":
            out.pop("randaugment_n"), out.pop("randaugment_m")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


class TrainTransform:
    """PIL RGB image -> (float tensor [3, S, S] normalised, View), S = image_size.

    Random draws use torch's global generator in a fixed order (crop, flip, policy, erasing), so
    seeding it before the call fixes the output.
    """

    def __init__(self, spec: AugmentSpec, *, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.spec, self.size = spec, int(image_size)
        policy = {
            "none": [],
            "trivial": [v2.TrivialAugmentWide()],
            "randaugment": [v2.RandAugment(num_ops=spec.randaugment_n, magnitude=spec.randaugment_m)],
        }
        if spec.policy not in policy:
            raise ConfigError(f"DATASET.AUGMENT.POLICY {spec.policy!r} is unknown; use one of {', '.join(policy)}")
        tail = _to_normalized_tensor(mean, std)
        if spec.erasing > 0:
            tail.append(v2.RandomErasing(p=spec.erasing, value=0))
        self.photometric = v2.Compose([*policy[spec.policy], *tail])

    def _crop(self, image: Image.Image) -> tuple[Image.Image, float]:
        s, spec = self.size, self.spec
        width, height = image.size
        if spec.crop == "rrc":
            top, left, h, w = v1.RandomResizedCrop.get_params(image, list(spec.scale), list(spec.ratio))
            return F.resized_crop(image, top, left, h, w, [s, s], antialias=True), (h * w) / (height * width)
        # resize and crop_pad both start from the whole image at IMAGE_SIZE (shorter side, centre crop).
        fitted = F.center_crop(F.resize(image, s, antialias=True), [s, s])
        shorter = min(width, height)
        area = (shorter * shorter) / (width * height)  # the centre square of the original
        if spec.crop == "resize":
            return fitted, area
        if spec.crop == "crop_pad":
            padded = F.pad(fitted, [spec.pad], fill=0)
            top, left, h, w = v1.RandomCrop.get_params(padded, (s, s))
            # Pixels of `fitted` inside the window: the window minus the padding it covers.
            inside_w = min(left + w, spec.pad + s) - max(left, spec.pad)
            inside_h = min(top + h, spec.pad + s) - max(top, spec.pad)
            return F.crop(padded, top, left, h, w), area * max(inside_w, 0) * max(inside_h, 0) / (s * s)
        raise ConfigError(f"DATASET.AUGMENT.CROP {spec.crop!r} is unknown; use rrc, crop_pad or resize")

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, View]:
        cropped, area = self._crop(image)
        flipped = self.spec.hflip and bool(torch.rand(1) < 0.5)
        if flipped:
            cropped = F.horizontal_flip(cropped)
        return self.photometric(cropped), View(hflip=flipped, crop_area=float(area))


def train_transform(
    *, image_size: int, mean: Sequence[float], std: Sequence[float], spec: AugmentSpec | None = None
) -> TrainTransform:
    """The training transform; without `spec`, the official RandomResizedCrop(image_size) + flip."""
    return TrainTransform(spec or AugmentSpec(), image_size=image_size, mean=mean, std=std)


def test_transform(*, image_size: int, resize_ratio: float, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL RGB image -> float tensor [3, image_size, image_size] (shorter side resized, centre crop, normalised)."""
    return v2.Compose(
        [
            v2.Resize(shorter_side_size(image_size, resize_ratio)),
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one sample's augmentation: a hash of (SEED, epoch, position in the split), 63 bits.

    Independent of which worker loads the sample, so the batches are the same for any NUM_WORKERS.
    """
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(2, np.uint32)[0])


# pytest collects module-level callables named test_*; these are presets, not tests, wherever they are imported.
test_transform.__test__ = False  # type: ignore[attr-defined]
