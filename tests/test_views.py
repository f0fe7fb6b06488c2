"""Target-aware views with hand-made targets: flip-sensitive masking, mirror swaps, the teacher's rows for the
mirrored image, small crops; the masked aspect BCE; the policy through build_data, the loader and summary.json."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_augmentation import cfg_of, data_dir, items  # noqa: F401  (data_dir is a fixture)
from torch.utils.data import DataLoader

from makd.atomic_files import atomic_write_json
from makd.data.build import build_data
from makd.data.transforms import View
from makd.data.views import ViewPolicy
from makd.distillers.losses import aspect_bce, makd_losses
from makd.errors import ConfigError
from makd.formats.aspect_files import read_aspect_file, write_aspect_file
from makd.formats.questions import write_questions

TARGETS = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
FLIPPED, UPRIGHT = View(hflip=True), View(hflip=False)


def test_flipped_view_masks_exactly_the_flip_sensitive_aspects():
    policy = ViewPolicy(6, flip_sensitive=[1, 4])
    targets, mask = policy.apply(TARGETS, FLIPPED)
    assert torch.equal(targets, TARGETS) and mask.tolist() == [1, 0, 1, 1, 0, 1]
    targets, mask = policy.apply(TARGETS, UPRIGHT)
    assert torch.equal(targets, TARGETS) and mask.tolist() == [1] * 6


def test_mirror_policy_swaps_exactly_the_declared_pairs():
    policy = ViewPolicy(6, flip_sensitive=[5], flip_mirror=[(3, 0)], flip_policy="mirror")
    targets, mask = policy.apply(TARGETS, FLIPPED)
    assert targets.tolist() == pytest.approx([0.4, 0.2, 0.3, 0.1, 0.5, 0.6])
    assert mask.tolist() == [1, 1, 1, 1, 1, 0]  # paired questions stay supervised, the unpaired sensitive one not
    assert policy.flip_sensitive == [0, 3, 5]
    assert torch.equal(policy.apply(TARGETS, UPRIGHT)[0], TARGETS)
    # "mask" with the same declaration masks the pair members too; "keep" changes nothing
    assert ViewPolicy(6, flip_sensitive=[5], flip_mirror=[(3, 0)]).apply(TARGETS, FLIPPED)[1].tolist() == [
        0, 1, 1, 0, 1, 0
    ]  # fmt: skip
    targets, mask = ViewPolicy(6, flip_sensitive=[5], flip_policy="keep").apply(TARGETS, FLIPPED)
    assert torch.equal(targets, TARGETS) and mask.tolist() == [1] * 6


def test_teacher_rows_of_the_mirrored_image_replace_the_policy_on_flipped_views():
    flipped_rows = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    policy = ViewPolicy(6, flip_sensitive=[1, 4])
    targets, mask = policy.apply(TARGETS, FLIPPED, flipped_rows)
    assert torch.equal(targets, flipped_rows) and mask.tolist() == [1] * 6
    assert torch.equal(policy.apply(TARGETS, UPRIGHT, flipped_rows)[0], TARGETS)


def test_small_crops_mask_every_aspect_and_nan_targets_are_never_supervised():
    policy = ViewPolicy(6, min_crop_area=0.3)
    assert policy.apply(TARGETS, View(crop_area=0.29))[1].tolist() == [0] * 6
    assert policy.apply(TARGETS, View(crop_area=0.30))[1].tolist() == [1] * 6
    assert ViewPolicy(6, min_crop_area=0.3, small_crop="bound").apply(TARGETS, View(crop_area=0.1))[1].sum() == 6
    with_nan = TARGETS.clone()
    with_nan[2] = float("nan")
    assert ViewPolicy(6).apply(with_nan, UPRIGHT)[1].tolist() == [1, 1, 0, 1, 1, 1]


def test_bad_declarations_fail_with_one_line():
    with pytest.raises(ConfigError, match="MaKD.FLIP_SENSITIVE: 6 is not a target column in 0..5"):
        ViewPolicy(6, flip_sensitive=[6])
    with pytest.raises(ConfigError, match="question q2 is in more than one mirror pair"):
        ViewPolicy(6, flip_mirror=[(0, 1), (1, 2)])


def test_masked_bce_is_the_mean_over_supervised_entries():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 3.0]], requires_grad=True)
    targets = torch.tensor([[0.3, 1.0, float("nan")], [0.7363, 0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

    def bce(z, t):
        s = 1 / (1 + math.exp(-z))
        return -(t * math.log(s) + (1 - t) * math.log(1 - s))

    expected = (bce(0.0, 0.3) + bce(2.0, 1.0) + bce(1.0, 0.7363)) / 3
    loss = aspect_bce(logits, targets, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[mask == 0].abs().sum() == 0 and logits.grad[mask == 1].abs().min() > 0
    finite = torch.nan_to_num(targets, nan=0.5)
    assert aspect_bce(logits, finite, torch.ones(2, 3)).item() == pytest.approx(aspect_bce(logits, finite).item())
    assert aspect_bce(logits, targets, torch.zeros(2, 3)).item() == 0.0
    student_logits = torch.cat([torch.zeros(2, 2), logits.detach()], 1)  # C = 2 class logits, then Q = 3
    losses = makd_losses(student_logits, torch.tensor([0, 1]), targets, 2, mask=mask)
    assert losses["loss_aspect"].item() == pytest.approx(4.0 * expected, rel=1e-6)


def test_loader_masks_the_sidecar_and_config_questions_on_flipped_views_only(data_dir):  # noqa: F811
    write_questions(
        data_dir / "q.txt", ["Is it red?", "Is the head on the left?", "Is it round?"], meta={"flip_sensitive": ["q2"]}
    )
    data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS", str(data_dir / "q.txt"), "MaKD.FLIP_SENSITIVE", "[q3]"))
    assert data.recipe["views"]["flip_sensitive"] == ["q2", "q3"]
    assert data.recipe["views"]["flip_sensitive_from"] == ["config", f"{data_dir / 'q.txt'}.meta.json"]
    seen = set()
    for epoch in range(3):
        for item in items(data.train, epoch):
            flipped = item["view"]["hflip"]
            seen.add(flipped)
            assert item["aspect_mask"].tolist() == ([1, 0, 0] if flipped else [1, 1, 1])
            assert torch.equal(item["aspects"], data.train.targets[item["index"]])
    assert seen == {True, False}


def test_mirrored_image_rows_are_used_on_flipped_views(data_dir):  # noqa: F811
    table = read_aspect_file(data_dir / "aspects.json")
    rows = {i: [1.0 - p for p in table.values[k].tolist()] for k, i in enumerate(table.ids)}
    write_aspect_file(data_dir / "aspects.flip.json", rows, meta={"view": "hflip"})
    data = build_data(cfg_of(data_dir, "DATASET.ASPECT_JSON_FLIP", str(data_dir / "aspects.flip.json")))
    assert data.recipe["views"]["flip_policy"] == "teacher_views"
    for item in items(data.train):
        own = data.train.targets[item["index"]]
        expected = 1.0 - own if item["view"]["hflip"] else own
        assert torch.allclose(item["aspects"], expected, atol=1e-6) and item["aspect_mask"].sum() == 3
    atomic_write_json(data_dir / "aspects.flip.json.meta.json", {"view": "vflip"})
    with pytest.raises(ConfigError, match="its sidecar says view 'vflip', not 'hflip'"):
        build_data(cfg_of(data_dir, "DATASET.ASPECT_JSON_FLIP", str(data_dir / "aspects.flip.json")))


def test_bound_small_crop_raises_the_crop_floor_for_makd_only(data_dir):  # noqa: F811
    opts = ("MaKD.MIN_CROP_AREA", "0.5", "MaKD.SMALL_CROP", "bound")
    data = build_data(cfg_of(data_dir, *opts))
    assert data.train.transform.spec.scale == (0.5, 1.0)
    assert all(item["view"]["crop_area"] >= 0.5 - 0.05 for e in range(3) for item in items(data.train, e))
    assert build_data(cfg_of(data_dir, *opts, "DISTILLER.TYPE", "NONE")).train.transform.spec.scale == (0.08, 1.0)


def test_mixup_keeps_an_aspect_supervised_only_where_both_images_are(data_dir):  # noqa: F811
    opts = ("DATASET.AUGMENT.MIXUP_ALPHA", "1.0", "MaKD.FLIP_SENSITIVE", "[q1]")
    data = build_data(cfg_of(data_dir, *opts))
    masks = torch.stack([item["aspect_mask"] for item in items(data.train)])
    batch = next(iter(DataLoader(data.train, batch_size=8, collate_fn=data.train.collate_fn)))
    assert torch.equal(batch["aspect_mask"], masks * masks[batch["mix_index"]])


def test_training_records_the_recipe_in_summary(release_dataset):
    from test_train_e2e import our_train, run_dir

    opts = ["DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "SOLVER.EPOCHS", "1"]
    opts += ["MaKD.FLIP_SENSITIVE", "[q2, q4]", "DATASET.AUGMENT.MIXUP_ALPHA", "0.2"]
    opts += ["DATASET.AUGMENT.CROP", "crop_pad"]
    assert our_train.main([str(release_dataset["config"]), *opts]) == 0
    summary = json.loads((run_dir(release_dataset) / "summary.json").read_text())
    recipe = summary["recipe"]
    assert recipe["augment"] == {"crop": "crop_pad", "pad": 4, "hflip": True, "policy": "none", "erasing": 0.0}
    assert recipe["views"]["flip_policy"] == "mask" and recipe["views"]["flip_sensitive"] == ["q2", "q4"]
    assert recipe["batch_mixing"]["mixup_alpha"] == 0.2
