"""Train/test image transforms (torchvision.transforms.v2 on uint8 image tensors [3, H, W]).

Both take the uint8 tensor of ImageIndex.load_uint8 and return a uint8 tensor [3, IMAGE_SIZE, IMAGE_SIZE]:
the conversion to float, normalisation with MEAN/STD, random erasing and mixup/CutMix run on whole batches
on the training device (makd/data/device_batch.py), so workers collate and ship 1 byte per value, not 4.

Train (`TrainTransform`, configured by DATASET.AUGMENT): a crop ("rrc" RandomResizedCrop, the CIFAR
"crop_pad" or a deterministic "resize"), an optional horizontal flip, an optional TrivialAugment /
RandAugment, and the box of the optional random erasing (drawn here, applied after normalisation). It
returns the image AND the view it drew (flip, visible area, erasing box), so that the aspect targets can
follow the view (makd/data/views.py). It draws from torch's global generator: AspectDataset seeds it per
sample from (SEED, epoch, index).

Test (`EvalTransform`): Resize(round(IMAGE_SIZE * RESIZE_RATIO)) + CenterCrop(IMAGE_SIZE).

Resize kernels. Every resize to a fixed shorter side (the test Resize, the image cache, the "resize" and
"crop_pad" fitting) is PIL's antialiased bilinear, as before the uint8 path, so evaluation is bit-identical
to the former per-sample float pipeline (tests/test_device_batch.py). The random resized crop uses
torchvision's uint8 tensor kernel, 3x faster than PIL's; the two differ by at most 1 level of 255 on about
0.3 % of values (measured in docs/data.md), which is below what the random crop itself varies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from makd.errors import ConfigError


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 tensor [3, H, W] (channels-last in memory, as PIL and the cache hold it)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def resize_shorter_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] with its shorter side resized to `size` by PIL's antialiased bilinear (see the module
    docstring: the one kernel of the test Resize, the cache and the deterministic train fitting)."""
    if min(image.shape[-2:]) == size:
        return image  # what PIL does too (a copy of the same pixels)
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    return pil_to_uint8(F.resize(pil, size, antialias=True))


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
    erase: tuple[int, int, int, int] | None = None  # random erasing's (top, left, height, width); (0, 0, 0, 0): none

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

    def strong(self, cfg) -> AugmentSpec:
        """This recipe with DATASET.AUGMENT.STRONG's policy: the strong view of two-view methods (MLKD)."""
        strong = cfg.DATASET.AUGMENT.STRONG
        return replace(
            self,
            policy=strong.POLICY,
            randaugment_n=int(strong.RANDAUGMENT_N),
            randaugment_m=int(strong.RANDAUGMENT_M),
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
    """uint8 [3, H, W] -> (uint8 [3, S, S], View), S = image_size; normalisation and erasing follow on the batch.

    Random draws use torch's global generator in a fixed order (crop, flip, policy, erasing box), so
    seeding it before the call fixes the output.
    """

    def __init__(self, spec: AugmentSpec, *, image_size: int) -> None:
        self.spec, self.size = spec, int(image_size)
        policy = {
            "none": None,
            "trivial": v2.TrivialAugmentWide(),
            "randaugment": v2.RandAugment(num_ops=spec.randaugment_n, magnitude=spec.randaugment_m),
        }
        if spec.policy not in policy:
            raise ConfigError(f"DATASET.AUGMENT.POLICY {spec.policy!r} is unknown; use one of {', '.join(policy)}")
        self.policy = policy[spec.policy]
        self.erasing = v2.RandomErasing(p=spec.erasing, value=0) if spec.erasing > 0 else None

    def _crop(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        s, spec = self.size, self.spec
        height, width = image.shape[-2:]
        if spec.crop == "rrc":
            top, left, h, w = v1.RandomResizedCrop.get_params(image, list(spec.scale), list(spec.ratio))
            return F.resized_crop(image, top, left, h, w, [s, s], antialias=True), (h * w) / (height * width)
        # resize and crop_pad both start from the whole image at IMAGE_SIZE (shorter side, centre crop).
        fitted = F.center_crop(resize_shorter_side(image, s), [s, s])
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

    def _erase_box(self, image: torch.Tensor) -> tuple[int, int, int, int] | None:
        """RandomErasing's own draws (apply with p, then its box) on the final image's shape; the box is
        applied after normalisation by the device step, so the erased values are 0 there, as before."""
        if self.erasing is None:
            return None
        if torch.rand(1) >= self.erasing.p:  # the order of torchvision's RandomErasing.forward
            return (0, 0, 0, 0)
        params = self.erasing.make_params([image])
        if params["v"] is None:  # no box fitted in its 10 attempts: nothing erased
            return (0, 0, 0, 0)
        return (int(params["i"]), int(params["j"]), int(params["h"]), int(params["w"]))

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, View]:
        cropped, area = self._crop(image)
        flipped = self.spec.hflip and bool(torch.rand(1) < 0.5)
        if flipped:
            cropped = F.horizontal_flip(cropped)
        if self.policy is not None:
            cropped = self.policy(cropped)
        # .contiguous(): the item owns its pixels (a crop of a cached image is otherwise a view of the cache).
        return cropped.contiguous(), View(hflip=flipped, crop_area=float(area), erase=self._erase_box(cropped))


class EvalTransform:
    """uint8 [3, H, W] -> uint8 [3, S, S]: shorter side to round(S * RESIZE_RATIO) (PIL's kernel), centre crop."""

    def __init__(self, *, image_size: int, resize_ratio: float) -> None:
        self.size, self.shorter_side = int(image_size), shorter_side_size(image_size, resize_ratio)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return F.center_crop(resize_shorter_side(image, self.shorter_side), [self.size, self.size]).contiguous()


def train_transform(*, image_size: int, spec: AugmentSpec | None = None) -> TrainTransform:
    """The training transform; without `spec`, the official RandomResizedCrop(image_size) + flip."""
    return TrainTransform(spec or AugmentSpec(), image_size=image_size)


def test_transform(*, image_size: int, resize_ratio: float) -> EvalTransform:
    """uint8 [3, H, W] -> uint8 [3, image_size, image_size] (shorter side resized, centre crop)."""
    return EvalTransform(image_size=image_size, resize_ratio=resize_ratio)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one sample's augmentation: a hash of (SEED, epoch, position in the split), 63 bits.

    Independent of which worker loads the sample, so the batches are the same for any NUM_WORKERS.
    """
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(2, np.uint32)[0])


# pytest collects module-level callables named test_*; these are presets, not tests, wherever they are imported.
test_transform.__test__ = False  # type: ignore[attr-defined]
