"""The strong view (DATASET.AUGMENT.STRONG) of two-view methods: the first view is unchanged by it, the second is
drawn from the same per-sample seed with the strong policy, and the device step normalises and erases both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from makd.config import ConfigError, load_cfg
from makd.data.datasets import AspectDataset
from makd.data.device_batch import DevicePreprocess
from makd.data.image_index import ImageIndex
from makd.data.transforms import AugmentSpec, train_transform


def _index() -> ImageIndex:
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8)
    return ImageIndex([f"i{k}" for k in range(6)], [0, 1, 0, 1, 0, 1], ["a", "b"], "mem", "", None, pixels)


def _datasets(erasing: float = 0.0):
    cfg = load_cfg(None, ["DATASET.AUGMENT.ERASING", str(erasing), "DATASET.AUGMENT.CROP", "crop_pad"])
    spec = AugmentSpec.from_cfg(cfg)
    weak = train_transform(image_size=16, spec=spec)
    strong = train_transform(image_size=16, spec=spec.strong(cfg))
    one = AspectDataset(_index(), weak, None, seed=3)
    two = AspectDataset(_index(), weak, None, seed=3, strong_transform=strong)
    return one, two, spec.strong(cfg)


def test_the_first_view_is_the_one_drawn_without_the_strong_view_and_draws_are_seeded():
    one, two, strong = _datasets()
    assert (strong.policy, strong.randaugment_n, strong.randaugment_m) == ("randaugment", 2, 10)
    differs = 0
    for i in range(6):
        a, b = one[(2, i)], two[(2, i)]
        assert torch.equal(a["image"], b["image"]) and a["view"] == b["view"]
        assert "image_strong" not in a and b["image_strong"].shape == b["image"].shape
        assert torch.equal(b["image_strong"], two[(2, i)]["image_strong"])  # (seed, epoch, index) fix it
        differs += not torch.equal(b["image_strong"], b["image"])
        assert not torch.equal(b["image_strong"], two[(3, i)]["image_strong"])  # another epoch, another draw
    assert differs == 6


def test_the_device_step_normalises_and_erases_both_views():
    _, two, _ = _datasets(erasing=1.0)
    batch = default_collate([two[(0, i)] for i in range(4)])
    assert batch["erase_strong"].shape == (4, 4)
    raw = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    out = DevicePreprocess([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(batch, torch.device("cpu"))
    for key, erase in (("image", "erase"), ("image_strong", "erase_strong")):
        expected = (raw[key].float() / 255 - 0.5) / 0.25
        for b in range(4):
            top, left, h, w = raw[erase][b].tolist()
            expected[b, :, top : top + h, left : left + w] = 0.0
        assert torch.allclose(out[key], expected, atol=1e-6)


def test_strong_policy_keys_are_checked():
    with pytest.raises(ConfigError, match=r"^DATASET.AUGMENT.STRONG.POLICY 'auto' is unknown"):
        load_cfg(None, ["DATASET.AUGMENT.STRONG.POLICY", "auto"])
    with pytest.raises(ConfigError, match=r"^DATASET.AUGMENT.STRONG.RANDAUGMENT_N must be >= 0"):
        load_cfg(None, ["DATASET.AUGMENT.STRONG.RANDAUGMENT_M", "31"])
