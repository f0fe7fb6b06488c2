"""build_data end to end on tiny class-folder and release datasets: checks, validation carve, aspect
join policies, target controls, test aspects, the image cache, and the export command."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_helpers import make_cfg, pixels, random_image, write_class_folders, write_release
from torch.utils.data import default_collate

from makd.commands.export_images import main as export_main
from makd.data.build import build_data
from makd.data.device_batch import prepare_batch
from makd.data.export import export_images
from makd.data.image_cache import cache_images
from makd.data.image_index import ImageIndex
from makd.data.layouts import build_image_indexes
from makd.errors import ConfigError
from makd.formats.aspect_files import write_aspect_file
from makd.formats.errors import ArtifactError
from makd.formats.files import sha256_file
from makd.formats.image_decode import ImageLoadError
from makd.formats.image_ids import image_id, list_image_files
from makd.formats.questions import write_questions

Q = 4
QUESTIONS = ["Is it red?", "Does it have stripes?", "Is the background dark?", "Can it fly?"]


@pytest.fixture
def folders(tmp_path):
    """3 classes x 6 training images (and 2 test each), a Q = 4 aspect file and its questions file."""
    train_ids = write_class_folders(tmp_path / "train", {"ant": 6, "bee": 6, "cat": 6})
    write_class_folders(tmp_path / "test", {"ant": 2, "bee": 2, "cat": 2}, seed=1)
    rng = np.random.default_rng(0)
    rows = {i: rng.uniform(0, 1, Q).round(4).tolist() for i in train_ids}
    write_questions(tmp_path / "q.txt", QUESTIONS, meta={"model": "test"})
    write_aspect_file(tmp_path / "aspects.json", rows, meta={"questions_sha256": sha256_file(tmp_path / "q.txt")})
    return tmp_path, rows


def cfg_for(tmp_path, **settings):
    base = {
        "DATASET.TYPE": "image_folder",
        "DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"),
        "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test"),
        "DATASET.ASPECT_JSON": str(tmp_path / "aspects.json"),
        "DATASET.IMAGE_SIZE": 8,
        "DATASET.RESIZE_RATIO": 1.25,
        "MaKD.ASPECT_NUM": Q,
    }
    base.update({k.replace("__", "."): v for k, v in settings.items()})
    return make_cfg(base)


def test_makd_bundle(folders):
    tmp_path, rows = folders
    data = build_data(cfg_for(tmp_path))
    assert (data.num_classes, data.num_aspects, data.class_names) == (3, Q, ["ant", "bee", "cat"])
    assert (len(data.train), len(data.test), data.val, data.dropped_ids) == (18, 6, None, [])
    assert data.aspect_path == str(tmp_path / "aspects.json")
    assert data.aspect_sha256 == sha256_file(tmp_path / "aspects.json")
    item = data.train[7]
    image, label, aspects = item["image"], item["label"], item["aspects"]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == 1  # normalised on the device
    assert aspects.dtype == torch.float32 and aspects.tolist() == pytest.approx(rows[data.train.index.ids[7]])
    batch = prepare_batch(default_collate([data.test[5]]), data.test, torch.device("cpu"))
    image, label, aspects = batch["image"][0], int(batch["label"][0]), batch["aspects"][0]
    assert image.shape == (3, 8, 8) and label == 2 and aspects.shape == (Q,) and torch.isnan(aspects).all()
    # the test transform is deterministic: Resize(10) + CenterCrop(8) + normalisation
    raw = Image.open(tmp_path / "test/cat/img_1.png").convert("RGB").resize((13, 10), Image.BILINEAR)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    expected = (torch.tensor(pixels(raw)[1:9, 2:10]).permute(2, 0, 1) / 255 - mean) / std
    assert torch.allclose(image, expected, atol=1e-5)
    restored = pickle.loads(pickle.dumps(data.train))  # DataLoader workers get a copy
    assert restored[3]["label"] == data.train[3]["label"]
    assert torch.equal(restored[3]["aspects"], data.train[3]["aspects"])


def test_baseline_needs_no_aspect_file(folders):
    tmp_path, _ = folders
    data = build_data(cfg_for(tmp_path, DISTILLER__TYPE="NONE", DATASET__ASPECT_JSON=""))
    assert data.num_aspects == 0 and data.aspect_path == "" and data.train[0]["aspects"].shape == (0,)
    assert data.test[0]["aspects"].shape == (0,)


def test_config_disagreeing_with_data(folders):
    tmp_path, _ = folders
    with pytest.raises(ConfigError) as caught:
        build_data(cfg_for(tmp_path, DATASET__NUM_CLASS=100))
    assert (
        str(caught.value) == f"DATASET.NUM_CLASS is 100 but {tmp_path / 'train'} has 3 classes; set DATASET.NUM_CLASS 3"
    )
    assert build_data(cfg_for(tmp_path, DATASET__NUM_CLASS=3)).num_classes == 3
    with pytest.raises(ConfigError) as caught:
        build_data(cfg_for(tmp_path, MaKD__ASPECT_NUM=50))
    assert str(caught.value) == (
        f"MaKD.ASPECT_NUM is 50 but {tmp_path / 'aspects.json'} has 4 aspects per image; set MaKD.ASPECT_NUM 4 "
        "(or 0: from the file)"
    )
    with pytest.raises(ConfigError, match="DATASET.ASPECT_JSON is empty; DISTILLER.TYPE MaKD needs"):
        build_data(cfg_for(tmp_path, DATASET__ASPECT_JSON=""))


def test_questions_file_is_checked(folders):
    tmp_path, rows = folders
    assert build_data(cfg_for(tmp_path, DATASET__QUESTIONS=str(tmp_path / "q.txt"))).num_aspects == Q
    write_questions(tmp_path / "three.txt", QUESTIONS[:3])
    with pytest.raises(ConfigError, match=r"three.txt holds 3 questions but .*aspects.json has 4 aspects per image"):
        build_data(cfg_for(tmp_path, DATASET__QUESTIONS=str(tmp_path / "three.txt")))
    write_questions(tmp_path / "other.txt", QUESTIONS[::-1])
    with pytest.raises(ConfigError) as caught:
        build_data(cfg_for(tmp_path, DATASET__QUESTIONS=str(tmp_path / "other.txt")))
    assert str(caught.value) == (
        f"DATASET.QUESTIONS {tmp_path / 'other.txt'} (sha256 {sha256_file(tmp_path / 'other.txt')[:12]}) is not the "
        f"questions file {tmp_path / 'aspects.json'} was made from (its sidecar aspects.json.meta.json records sha256 "
        f"{sha256_file(tmp_path / 'q.txt')[:12]}); point DATASET.QUESTIONS at that file, or re-run stage 2 with the "
        "edited questions"
    )
    # A sidecar without a sha256 but with the question list (older demo files) is compared line by line.
    write_aspect_file(tmp_path / "aspects.json", rows, meta={"questions": QUESTIONS})
    assert build_data(cfg_for(tmp_path, DATASET__QUESTIONS=str(tmp_path / "q.txt"))).num_aspects == Q
    with pytest.raises(ConfigError, match=r"other.txt differs from the questions listed in .*aspects.json.meta.json"):
        build_data(cfg_for(tmp_path, DATASET__QUESTIONS=str(tmp_path / "other.txt")))


def test_duplicate_image_ids_in_an_aspect_file_are_refused(folders):
    tmp_path, rows = folders
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in rows.items()]
    lines.append(f'"bee/img_2": {json.dumps([0.0] * Q)}')  # the same id again (json.load would keep this one)
    (tmp_path / "aspects.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    first = 2 + list(rows).index("bee/img_2")
    with pytest.raises(ArtifactError) as caught:
        build_data(cfg_for(tmp_path))
    assert str(caught.value) == (
        f"{tmp_path / 'aspects.json'}: image id 'bee/img_2' has 2 rows (lines {first}, {len(lines) + 1}); "
        "JSON keeps only the last one, so keep one row per image id (re-run stage 2 or fix the file)"
    )


def test_bad_images_stop_build_data_before_training(folders):
    tmp_path, rows = folders
    (tmp_path / "test" / "bee" / "img_1.png").write_text("a text file named .png")
    (tmp_path / "train" / "cat" / "img_4.png").write_bytes(b"")
    for settings in ({}, {"DATASET__NUM_WORKERS": 2}, {"DATASET__CACHE_IMAGES": True}):
        with pytest.raises(ImageLoadError) as caught:
            build_data(cfg_for(tmp_path, **settings))
        assert str(caught.value) == (
            f"cannot read image {tmp_path / 'train/cat/img_4.png'}: empty file (0 bytes), not an image; 1 more of "
            f"the 24 images cannot be read either (next: {tmp_path / 'test/bee/img_1.png'}); fix or remove them "
            "(DATASET.CHECK_IMAGES False skips this check)"
        )
    assert len(build_data(cfg_for(tmp_path, DATASET__CHECK_IMAGES=False)).test) == 6  # the check can be skipped


def test_a_non_image_without_a_row_is_called_not_an_image(folders):
    tmp_path, rows = folders
    (tmp_path / "train" / "ant" / "notes.png").write_text("my notes")  # has an id, so it lacks an aspect row
    with pytest.raises(ImageLoadError, match=r"notes.png: not an image \(no image format recognises its 8 bytes\)"):
        build_data(cfg_for(tmp_path))
    dropped = build_data(cfg_for(tmp_path, DATASET__MISSING_ASPECTS="drop"))  # what stage 2 could not read is left out
    assert dropped.dropped_ids == ["ant/notes"] and len(dropped.train) == 18


def test_validation_carve(folders):
    tmp_path, rows = folders
    data = build_data(cfg_for(tmp_path, DATASET__VAL_FRACTION=0.34, MaKD__TARGETS="random", SEED=5))
    val, train = data.val.index, data.train.index
    assert len(val) == 6 and [val.labels.count(c) for c in range(3)] == [2, 2, 2]  # stratified: round(0.34 * 6)
    assert not set(val.ids) & set(train.ids) and len(train) == 12
    again = build_data(cfg_for(tmp_path, DATASET__VAL_FRACTION=0.34, DISTILLER__TYPE="NONE", DATASET__ASPECT_JSON=""))
    assert again.val.index.ids == val.ids  # same images whatever the distiller, aspect file or targets
    assert build_data(cfg_for(tmp_path, DATASET__VAL_FRACTION=0.34, DATASET__VAL_SEED=1)).val.index.ids != val.ids
    # validation keeps the teacher's rows (for its metrics) while training uses the random control
    assert data.val[0]["aspects"].tolist() == pytest.approx(rows[val.ids[0]])
    random_rows = data.train.targets.numpy()
    assert ((random_rows >= 0) & (random_rows < 1)).all()
    assert not np.allclose(random_rows, np.array([rows[i] for i in train.ids], dtype=np.float32), atol=0.05)
    assert data.val[0]["image"].shape == (3, 8, 8)  # validation uses the test transform


def test_missing_rows_policies(folders):
    tmp_path, rows = folders
    val_ids = build_data(cfg_for(tmp_path, DATASET__VAL_FRACTION=0.34)).val.index.ids
    train_only = next(i for i in sorted(rows) if i not in val_ids)
    partial = {k: v for k, v in rows.items() if k not in (val_ids[0], train_only)}
    write_aspect_file(tmp_path / "partial.json", partial)
    settings = dict(DATASET__ASPECT_JSON=str(tmp_path / "partial.json"), DATASET__VAL_FRACTION=0.34)
    with pytest.raises(ArtifactError) as caught:
        build_data(cfg_for(tmp_path, **settings))
    first = ", ".join(sorted([val_ids[0], train_only]))
    assert str(caught.value) == (
        f"2 training images have no row in {tmp_path / 'partial.json'} (first: {first}); "
        "run stage 2 on them or set DATASET.MISSING_ASPECTS drop"
    )
    data = build_data(cfg_for(tmp_path, **settings, DATASET__MISSING_ASPECTS="drop"))
    assert data.dropped_ids == [train_only] and len(data.train) == 11 and train_only not in data.train.index.ids
    assert data.val.index.ids == val_ids and torch.isnan(data.val[0]["aspects"]).all()  # the carve is unchanged
    assert all(data.train.targets[k].tolist() == pytest.approx(rows[i]) for k, i in enumerate(data.train.index.ids))


@pytest.mark.parametrize("mode", ["shuffled", "class_mean"])
def test_target_controls_through_build(folders, mode):
    tmp_path, rows = folders
    data = build_data(cfg_for(tmp_path, MaKD__TARGETS=mode))
    teacher = np.array([rows[i] for i in data.train.index.ids], dtype=np.float32)
    out = data.train.targets.numpy()
    if mode == "shuffled":
        assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, teacher.tolist())) and not (out == teacher).all()
    else:
        labels = np.array(data.train.labels)
        for c in range(3):
            assert np.allclose(out[labels == c], teacher[labels == c].mean(axis=0), atol=1e-6)


def test_test_rows_come_only_from_the_test_aspect_file(tmp_path):
    classes = ["cat", "dog"]
    train_ids = write_release(tmp_path / "train", classes, per_class=3)
    test_ids = write_release(tmp_path / "test", classes, per_class=2, seed=1)  # reuses names like cat_0_0
    write_aspect_file(tmp_path / "aspects.json", {i: [0.9] * Q for i in train_ids})
    cfg = cfg_for(tmp_path, DATASET__TYPE="auto")
    data = build_data(cfg)
    assert "cat_0_0" in data.test.index.ids and torch.isnan(data.test[0]["aspects"]).all()
    write_aspect_file(tmp_path / "test_aspects.json", {i: [0.1 * (k + 1)] * Q for k, i in enumerate(test_ids[:3])})
    data = build_data(
        cfg_for(tmp_path, DATASET__TYPE="auto", DATASET__TEST_ASPECT_JSON=str(tmp_path / "test_aspects.json"))
    )
    assert [data.test[k]["aspects"][0].item() for k in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert torch.isnan(data.test[3]["aspects"]).all()  # a test image without a row keeps NaN (metrics skip it)
    assert data.test_aspect_sha256 == sha256_file(tmp_path / "test_aspects.json")
    write_aspect_file(tmp_path / "narrow.json", {i: [0.5] for i in test_ids})
    with pytest.raises(ConfigError, match=r"narrow.json has 1 aspects per image but DATASET.ASPECT_JSON has 4"):
        build_data(cfg_for(tmp_path, DATASET__TYPE="auto", DATASET__TEST_ASPECT_JSON=str(tmp_path / "narrow.json")))


def test_image_cache_equals_uncached_test_pipeline(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "test" / "a").mkdir(parents=True)
    sizes = [(40, 30), (31, 57), (12, 9), (10, 10)]  # two larger than the resize size (10), two not
    for k, size in enumerate(sizes):
        random_image(k, size=size, mode="L" if k == 1 else "RGB").save(tmp_path / "train" / "a" / f"{k}.png")
        random_image(k + 10, size=size).save(tmp_path / "test" / "a" / f"{k}.png")
    plain = build_data(cfg_for(tmp_path, DISTILLER__TYPE="NONE", DATASET__RESIZE_RATIO=1.25))
    cached = build_data(
        cfg_for(tmp_path, DISTILLER__TYPE="NONE", DATASET__RESIZE_RATIO=1.25, DATASET__CACHE_IMAGES=True)
    )
    assert cached.test.index.pixels is not None and cached.test.index.ids == plain.test.index.ids
    shapes = [cached.test.index.pixels[k].shape for k in range(4)]
    assert shapes == [(10, 13, 3), (18, 10, 3), (9, 12, 3), (10, 10, 3)]  # shorter side 10, never enlarged
    for k in range(4):
        assert torch.equal(cached.test[k]["image"], plain.test[k]["image"])  # bit-identical after the test transform
    assert cached.train[1]["image"].shape == (3, 8, 8)
    for k in (2, 3):  # small images are stored untouched
        assert (pixels(cached.train.index.load(k)) == pixels(plain.train.index.load(k))).all()
    restored = pickle.loads(pickle.dumps(cached.test.index))
    assert (restored.pixels[1] == cached.test.index.pixels[1]).all()
    assert cache_images(restored, 10) is restored  # already in memory


def test_export_writes_pngs_whose_ids_match(tmp_path, capsys):
    write_release(tmp_path / "train", ["cat", "dog"], per_class=2)
    write_release(tmp_path / "test", ["cat", "dog"], per_class=1, seed=1)
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {"DATASET": {"TRAIN_IMAGE_PATH": str(tmp_path / "train"), "TEST_IMAGE_PATH": str(tmp_path / "test")}}
        )
    )
    assert export_main([str(config), str(tmp_path / "out"), "--split", "test"]) == 0
    assert "wrote 2 new PNGs" in capsys.readouterr().out
    _, test = build_image_indexes(
        make_cfg(
            {"DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"), "DATASET.TEST_IMAGE_PATH": str(tmp_path / "out")}
        )
    )
    assert test.ids == ["cat_0_0", "dog_1_0"] and test.labels == [0, 1]
    assert (pixels(test.load(1)) == pixels(Image.open(tmp_path / "test/dog_1_0.png"))).all()
    # in-memory data (CIFAR-like ids with a split folder) comes out under the same ids
    array = np.random.default_rng(0).integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    memory = ImageIndex(["train/00000", "train/00001", "train/00002"], [0, 1, 0], ["x", "y"], "mem", "", None, array)
    assert export_images(memory, tmp_path / "cifar") == 3 and export_images(memory, tmp_path / "cifar") == 0
    files = list_image_files(tmp_path / "cifar")
    assert [image_id(f, tmp_path / "cifar") for f in files] == memory.ids
    assert (pixels(Image.open(files[2])) == array[2]).all()
    with pytest.raises(SystemExit):
        export_main([str(config), str(tmp_path / "bad"), "DATASET.TYPE", "nope"])
    assert "unknown DATASET.TYPE 'nope'" in capsys.readouterr().err
