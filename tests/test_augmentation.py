"""DATASET.AUGMENT keys, checked on the pixels the model receives (the loader's uint8 items after the device step);
per-sample seeds (same batches for any NUM_WORKERS); label smoothing, mixup and CutMix (mixed images get the
mixed aspect targets)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

from makd.config import load_cfg
from makd.data.build import build_data
from makd.data.device_batch import prepare_batch
from makd.data.transforms import AugmentSpec, test_transform
from makd.errors import ConfigError
from makd.formats.aspect_files import write_aspect_file

SIZE, Q, C = 16, 3, 2
MEAN, STD = 0.5, 0.25


def gradient_image(seed: int, size: int = SIZE) -> Image.Image:
    """Red rises left to right, green top to bottom (so flips and shifts are visible), blue is noise."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(size), np.arange(size))
    pixels = np.stack([xs * 255 // (size - 1), ys * 255 // (size - 1), rng.integers(0, 256, (size, size))], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture
def data_dir(tmp_path):
    """2 classes x 4 training images (16 px), 1 test image each, Q = 3 distinct aspect rows."""
    rows = {}
    for split, count in (("train", 4), ("test", 1)):
        for c, name in enumerate(("ant", "bee")):
            (tmp_path / split / name).mkdir(parents=True)
            for k in range(count):
                gradient_image(100 * c + k + (50 if split == "test" else 0)).save(tmp_path / split / name / f"{k}.png")
                rows[f"{name}/{k}"] = [round(0.1 + 0.1 * k + 0.4 * c, 4), 0.5, round(0.9 - 0.1 * k, 4)]
    write_aspect_file(tmp_path / "aspects.json", rows)
    return tmp_path


def cfg_of(data_dir, *opts, image_size: int = SIZE):
    return load_cfg(
        None,
        [
            "DATASET.TYPE", "image_folder",
            "DATASET.TRAIN_IMAGE_PATH", str(data_dir / "train"),
            "DATASET.TEST_IMAGE_PATH", str(data_dir / "test"),
            "DATASET.ASPECT_JSON", str(data_dir / "aspects.json"),
            "DATASET.IMAGE_SIZE", str(image_size),
            "DATASET.RESIZE_RATIO", "1.0",
            "DATASET.MEAN", f"[{MEAN}, {MEAN}, {MEAN}]",
            "DATASET.STD", f"[{STD}, {STD}, {STD}]",
            *opts,
        ],
    )  # fmt: skip


# The whole image: the test pipeline at RESIZE_RATIO 1 on 16-px images (Resize(16) is the identity).
whole_image = test_transform(image_size=SIZE, resize_ratio=1.0)
CPU = torch.device("cpu")


def model_input(dataset, batch: dict) -> dict:
    """A collated batch as the model receives it: the dataset's device step (normalise, erase, mix) on the CPU."""
    return prepare_batch(batch, dataset, CPU)


def items(dataset, epoch: int = 0) -> list[dict]:
    """Every item of `dataset` at `epoch`, its image as the model receives it (float, normalised, erased)."""
    dataset.set_epoch(epoch)
    return [{**item, "image": model_input(dataset, default_collate([item]))["image"][0]} for item in map(
        dataset.__getitem__, range(len(dataset)))]  # fmt: skip


# The former per-sample float pipeline (PIL -> normalised float tensor), as the reference of the whole image.
former_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([MEAN] * 3, [STD] * 3)])


def originals(dataset) -> list[torch.Tensor]:
    """The whole images, normalised (DATASET.MEAN / STD of the tests)."""
    return [former_float(dataset.index.load(i)).as_subclass(torch.Tensor) for i in range(len(dataset))]


def test_defaults_are_the_official_recipe(data_dir):
    data = build_data(cfg_of(data_dir))
    assert data.train.transform.spec == AugmentSpec(crop="rrc", scale=(0.08, 1.0), ratio=(0.75, 4 / 3), hflip=True)
    assert data.recipe["augment"] == {
        "crop": "rrc", "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3], "hflip": True, "policy": "none", "erasing": 0.0
    }  # fmt: skip
    assert data.recipe["batch_mixing"] is None
    batch = next(iter(DataLoader(data.train, batch_size=8, collate_fn=data.train.collate_fn)))
    assert batch["label"].dtype == torch.int64 and "label_index" not in batch  # unchanged batches when all is off
    views = [item["view"] for item in items(data.train)]
    assert any(v["hflip"] for v in views) and not all(v["hflip"] for v in views)
    assert all(0.08 - 1e-6 <= v["crop_area"] <= 1.0 for v in views) and min(v["crop_area"] for v in views) < 0.9


def test_resize_crop_has_no_randomness(data_dir):
    data = build_data(cfg_of(data_dir, "DATASET.AUGMENT.CROP", "resize", "DATASET.AUGMENT.HFLIP", "False"))
    for epoch in (0, 3):
        for item, whole in zip(items(data.train, epoch), originals(data.train)):
            assert torch.equal(item["image"], whole) and item["view"] == {"hflip": False, "crop_area": 1.0}


def test_hflip_key_mirrors_exactly_the_flagged_views(data_dir):
    data = build_data(cfg_of(data_dir, "DATASET.AUGMENT.CROP", "resize"))
    flags = []
    for epoch in range(3):
        for item, whole in zip(items(data.train, epoch), originals(data.train)):
            expected = whole.flip(-1) if item["view"]["hflip"] else whole
            assert torch.equal(item["image"], expected)
            flags.append(item["view"]["hflip"])
    assert 0 < sum(flags) < len(flags)


def test_rrc_scale_and_ratio_keys(data_dir):
    off = ("DATASET.AUGMENT.HFLIP", "False")
    full = ("DATASET.AUGMENT.SCALE", "[1.0, 1.0]", "DATASET.AUGMENT.RATIO", "[1.0, 1.0]")
    whole = build_data(cfg_of(data_dir, *full, *off))
    for item, original in zip(items(whole.train), originals(whole.train)):  # the whole square image: no crop
        assert torch.allclose(item["image"], original, atol=1e-6) and item["view"]["crop_area"] == 1.0
    small = build_data(cfg_of(data_dir, "DATASET.AUGMENT.SCALE", "[0.1, 0.2]", *off))
    for item, original in zip(items(small.train), originals(small.train)):
        assert 0.1 - 0.02 <= item["view"]["crop_area"] <= 0.2 + 0.02  # whole pixels: areas are rounded
        # a crop of <= 20% of the area, upscaled: the red ramp spans far fewer values than the whole image's
        red = item["image"][0]
        assert (red.max() - red.min()) < 0.6 * (original[0].max() - original[0].min())


def test_crop_pad_is_a_shift_with_black_padding(data_dir):
    data = build_data(cfg_of(data_dir, "DATASET.AUGMENT.CROP", "crop_pad", "DATASET.AUGMENT.PAD", "3", *(
        "DATASET.AUGMENT.HFLIP", "False")))  # fmt: skip
    black = (0.0 - MEAN) / STD
    shifts = set()
    for epoch in range(2):
        for item, whole in zip(items(data.train, epoch), originals(data.train)):
            padded = F.pad(whole, (3, 3, 3, 3), value=black)
            found = [
                (dy, dx)
                for dy in range(7)
                for dx in range(7)
                if torch.equal(item["image"], padded[:, dy : dy + SIZE, dx : dx + SIZE])
            ]
            assert found, "crop_pad output is not a window of the padded image"
            dy, dx = found[0]
            shifts.add((dy, dx))
            assert item["view"]["crop_area"] == pytest.approx((SIZE - abs(dy - 3)) * (SIZE - abs(dx - 3)) / SIZE**2)
    assert len(shifts) > 1 and shifts != {(3, 3)}


@pytest.mark.parametrize("policy", ["trivial", "randaugment"])
def test_policy_keys_change_pixels_but_not_the_crop_and_flip_draws(data_dir, policy):
    plain, augmented = build_data(cfg_of(data_dir)), build_data(cfg_of(data_dir, "DATASET.AUGMENT.POLICY", policy))
    changed = 0
    for epoch in range(3):
        for a, p in zip(items(augmented.train, epoch), items(plain.train, epoch)):
            assert a["view"] == p["view"]  # the policy draws after the crop and the flip
            changed += not torch.equal(a["image"], p["image"])
    assert changed >= 24 // 4  # some ops (identity, autocontrast of a full-range image) leave pixels alone


def test_random_erasing_key_zeroes_a_box(data_dir):
    base = ("DATASET.AUGMENT.CROP", "resize", "DATASET.AUGMENT.HFLIP", "False")
    erased = items(build_data(cfg_of(data_dir, *base, "DATASET.AUGMENT.ERASING", "1.0")).train)
    for item, whole in zip(erased, originals(build_data(cfg_of(data_dir, *base)).train)):
        zero = (item["image"] == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert zero.any() and zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a filled box
        assert torch.equal(item["image"][:, ~zero], whole[:, ~zero])  # and nothing else changed


def test_label_smoothing_key_yields_smoothed_class_targets(data_dir):
    data = build_data(cfg_of(data_dir, "DATASET.AUGMENT.LABEL_SMOOTHING", "0.2"))
    batch = next(iter(DataLoader(data.train, batch_size=8, collate_fn=data.train.collate_fn)))
    hard = batch["label_index"]
    assert torch.equal(hard, torch.tensor(data.train.labels))
    expected = torch.full((8, C), 0.1)
    expected[torch.arange(8), hard] = 0.9
    assert torch.allclose(batch["label"], expected)
    logits = torch.randn(8, C)
    assert F.cross_entropy(logits, batch["label"]).item() == pytest.approx(
        F.cross_entropy(logits, hard, label_smoothing=0.2).item(), rel=1e-6
    )
    assert torch.equal(batch["aspects"], data.train.targets)  # aspect targets are not smoothed


def _partner_check(batch, unmixed, lam):
    """Each sample b is lam * own + (1 - lam) * some partner p, for the image, class and aspect targets."""
    own_images, own_aspects = torch.stack([u["image"] for u in unmixed]), torch.stack([u["aspects"] for u in unmixed])
    own_labels = F.one_hot(torch.tensor([u["label"] for u in unmixed]), C).float()
    partners = []
    for b in range(len(unmixed)):
        candidates = [
            p
            for p in range(len(unmixed))
            if torch.allclose(batch["image"][b], lam * own_images[b] + (1 - lam) * own_images[p], atol=1e-5)
        ]
        assert candidates, f"sample {b} is not a mixup of its image with any other"
        p = candidates[0]
        assert torch.allclose(batch["aspects"][b], lam * own_aspects[b] + (1 - lam) * own_aspects[p], atol=1e-6)
        assert torch.allclose(batch["label"][b], lam * own_labels[b] + (1 - lam) * own_labels[p], atol=1e-6)
        partners.append(p)
    return partners


def test_mixup_mixes_aspect_targets_with_the_images_lambda(data_dir):
    base = ("DATASET.AUGMENT.CROP", "resize", "DATASET.AUGMENT.HFLIP", "False")
    data = build_data(cfg_of(data_dir, *base, "DATASET.AUGMENT.MIXUP_ALPHA", "1.0"))
    unmixed = items(data.train)
    batch = model_input(data.train, next(iter(DataLoader(data.train, batch_size=8, collate_fn=data.train.collate_fn))))
    lam = float(batch["mix_lambda"][0])
    assert 0.0 < lam < 1.0 and torch.equal(batch["mix_lambda"], torch.full((8,), lam))
    partners = _partner_check(batch, unmixed, lam)
    assert sorted(partners) == list(range(8)) and partners != list(range(8))  # a permutation, not the identity


def test_cutmix_pastes_a_box_and_mixes_targets_by_its_area(data_dir):
    base = ("DATASET.AUGMENT.CROP", "resize", "DATASET.AUGMENT.HFLIP", "False")
    data = build_data(cfg_of(data_dir, *base, "DATASET.AUGMENT.CUTMIX_ALPHA", "1.0"))
    unmixed = items(data.train)
    own = torch.stack([u["image"] for u in unmixed])
    loader = DataLoader(data.train, batch_size=8, collate_fn=data.train.collate_fn)
    for epoch in range(3):  # some lambda of 1 (empty box) is possible: look at a few epochs
        data.train.set_epoch(epoch)
        batch = model_input(data.train, next(iter(loader)))
        lam = float(batch["mix_lambda"][0])
        partner = batch["mix_index"]
        assert sorted(partner.tolist()) == list(range(8))
        kept = (batch["image"] == own).all(dim=1)  # [B, H, W]: pixels still the sample's own
        pasted = (batch["image"] == own[partner]).all(dim=1)
        moved = partner != torch.arange(8)
        assert (kept | pasted).all()  # every pixel comes from one of the two images
        kept_area = kept[moved].float().mean(dim=(1, 2))
        assert torch.equal(kept_area, torch.full((int(moved.sum()),), lam))  # lam = the exact kept area
        box = ~kept[moved]
        rows, cols = box.any(dim=2), box.any(dim=1)
        assert torch.equal(box, rows[:, :, None] & cols[:, None, :])  # the pasted part is one rectangle
        own_aspects = torch.stack([u["aspects"] for u in unmixed])
        assert torch.allclose(batch["aspects"], lam * own_aspects + (1 - lam) * own_aspects[partner], atol=1e-6)
        labels = F.one_hot(batch["label_index"], C).float()
        assert torch.allclose(batch["label"], lam * labels + (1 - lam) * labels[partner], atol=1e-6)


def test_same_batches_for_any_num_workers_and_new_draws_each_epoch(data_dir):
    cfg = cfg_of(data_dir, "DATASET.AUGMENT.POLICY", "trivial", "DATASET.AUGMENT.MIXUP_ALPHA", "0.4")
    data = build_data(cfg)

    def batches(workers: int, epoch: int) -> list[dict]:
        data.train.set_epoch(epoch)
        loader = DataLoader(data.train, batch_size=3, num_workers=workers, collate_fn=data.train.collate_fn)
        return list(loader)

    for epoch in (0, 1):
        serial, parallel = batches(0, epoch), batches(2, epoch)
        assert len(serial) == len(parallel) == 3
        for a, b in zip(serial, parallel):
            assert a["image"].dtype == torch.uint8 and a["mix_plan"] == b["mix_plan"]  # workers ship uint8
            for key in ("image", "label", "aspects", "aspect_mask", "mix_lambda", "index"):
                assert torch.equal(a[key], b[key]), key
            assert torch.equal(a["view"]["hflip"], b["view"]["hflip"])
            assert torch.equal(model_input(data.train, a)["image"], model_input(data.train, b)["image"])
    assert not torch.equal(batches(0, 0)[0]["image"], batches(0, 1)[0]["image"])


def test_unknown_augment_values_fail_with_one_line(data_dir):
    with pytest.raises(ConfigError, match="DATASET.AUGMENT.CROP 'random' is unknown; use one of rrc, crop_pad, resize"):
        cfg_of(data_dir, "DATASET.AUGMENT.CROP", "random")
    with pytest.raises(ConfigError, match=r"DATASET.AUGMENT.SCALE must be \[min, max\]"):
        cfg_of(data_dir, "DATASET.AUGMENT.SCALE", "[0.9, 0.2]")
    with pytest.raises(ConfigError, match="unknown config key DATASET.HFLIP"):
        cfg_of(data_dir, "DATASET.HFLIP", "False")


def test_aspect_num_zero_takes_q_from_the_file(data_dir):
    data = build_data(cfg_of(data_dir, "MaKD.ASPECT_NUM", "0"))
    assert data.num_aspects == Q and data.train.targets.shape == (8, Q)
    with pytest.raises(ConfigError, match="MaKD.ASPECT_NUM is 5 but .* has 3 aspects"):
        build_data(cfg_of(data_dir, "MaKD.ASPECT_NUM", "5"))
    (data_dir / "q.txt").write_text("Is it red?\nIs it round?\n")
    with pytest.raises(ConfigError, match="holds 2 questions but .* has 3 aspects"):
        build_data(cfg_of(data_dir, "MaKD.ASPECT_NUM", "0", "DATASET.QUESTIONS", str(data_dir / "q.txt")))


def test_small_images_warn_when_the_test_resize_crops_their_borders(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="makd.data.build"):
        build_data(cfg_of(data_dir, "DATASET.RESIZE_RATIO", "1.143"))
    assert "keeps only the central 87% of each side; set DATASET.RESIZE_RATIO 1.0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="makd.data.build"):
        build_data(cfg_of(data_dir, "DATASET.RESIZE_RATIO", "1.0"))
        build_data(cfg_of(data_dir, "DATASET.RESIZE_RATIO", "1.143", image_size=8))  # 16 px images, 8 px crops
    assert "RESIZE_RATIO" not in caplog.text


def test_training_split_scored_with_the_evaluation_transform(data_dir):
    data = build_data(cfg_of(data_dir, "DATASET.AUGMENT.POLICY", "trivial", "DATASET.AUGMENT.MIXUP_ALPHA", "1.0"))
    scored = data.train.with_transform(data.test.transform)
    for epoch in (0, 1):
        for item, whole in zip(items(scored, epoch), originals(data.train)):
            assert torch.equal(item["image"], whole) and item["view"] == {"hflip": False, "crop_area": 1.0}
            assert torch.equal(item["aspects"], data.train.targets[item["index"]]) and item["aspect_mask"].sum() == Q
    batch = next(iter(DataLoader(scored, batch_size=8, collate_fn=scored.collate_fn)))
    assert batch["label"].dtype == torch.int64 and "mix_lambda" not in batch  # no batch mixing either
