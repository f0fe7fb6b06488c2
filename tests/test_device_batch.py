"""The uint8 path: evaluation bit-identical to the former per-sample float pipeline, erasing and the random
resized crop against it, channels_last, and persistent training workers giving the batches of 0 workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_augmentation import cfg_of, data_dir  # noqa: F401  (data_dir is a fixture)
from torch.utils.data import default_collate
from torchvision import transforms as v1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from makd.data.build import build_data
from makd.data.device_batch import DevicePreprocess, erase_mask, prepare_batch
from makd.data.image_cache import cache_images
from makd.data.image_index import ImageIndex
from makd.data.transforms import pil_to_uint8, test_transform
from makd.engine.distributed import DistInfo
from makd.engine.trainer import make_train_loader

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CPU = torch.device("cpu")


def former_test_transform(image_size: int, resize_ratio: float) -> v2.Compose:
    """The evaluation pipeline before the uint8 path (PIL in, normalised float out, per sample)."""
    return v2.Compose(
        [
            v2.Resize(int(round(image_size * resize_ratio))),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth random image with noise (closer to a photo than pure noise), size (width, height)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    noisy = np.asarray(coarse).astype(np.int16) + rng.integers(-10, 11, (size[1], size[0], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture
def image_files(tmp_path):
    """JPEG and PNG files larger, smaller and equal to the test Resize (shorter side 64 for 56 px at 1.143)."""
    sizes = [(150, 97), (97, 150), (64, 80), (40, 30), (56, 56), (201, 133)]
    paths = []
    for k, size in enumerate(sizes):
        for fmt in ("png", "jpg"):
            path = tmp_path / f"img{k}.{fmt}"
            photo(k, size).save(path, quality=85) if fmt == "jpg" else photo(k, size).save(path)
            paths.append(str(path))
    return ImageIndex([f"i{k}" for k in range(len(paths))], [0] * len(paths), ["a"], str(tmp_path), paths=paths)


def test_evaluation_is_bit_identical_to_the_former_float_pipeline(image_files):
    size, ratio = 56, 1.143
    former, new, on_device = former_test_transform(size, ratio), test_transform(image_size=size, resize_ratio=ratio), (
        DevicePreprocess(MEAN, STD))  # fmt: skip
    cached = cache_images(image_files, int(round(size * ratio)), num_threads=1)
    for index in (image_files, cached):  # decoded files, and the uint8 cache
        expected = torch.stack([former(image_files.load(i)).as_subclass(torch.Tensor) for i in range(len(index))])
        batch = default_collate([new(index.load_uint8(i)) for i in range(len(index))])
        assert batch.dtype == torch.uint8
        assert torch.equal(on_device.images(batch), expected)  # 0 difference: the same values bit for bit


def test_random_resized_crop_is_within_one_level_of_pil_and_draws_the_same_boxes(image_files):
    """The train crop's tensor kernel vs the former PIL one: the same box from the same seed, pixels within 1/255."""
    worst, differing, total = 0, 0, 0
    for i in range(len(image_files)):
        pil, tensor = image_files.load(i), image_files.load_uint8(i)
        torch.manual_seed(i)
        box_pil = v1.RandomResizedCrop.get_params(pil, [0.08, 1.0], [3 / 4, 4 / 3])
        torch.manual_seed(i)
        box = v1.RandomResizedCrop.get_params(tensor, [0.08, 1.0], [3 / 4, 4 / 3])
        assert box == box_pil
        old = pil_to_uint8(F.resized_crop(pil, *box, [56, 56], antialias=True)).int()
        new = F.resized_crop(tensor, *box, [56, 56], antialias=True).int()
        gap = (old - new).abs()
        worst, differing, total = max(worst, int(gap.max())), differing + int((gap > 0).sum()), total + gap.numel()
    assert worst <= 1 and differing / total < 0.02


def test_erasing_boxes_are_the_former_random_erasing(data_dir):  # noqa: F811
    base = ("DATASET.AUGMENT.CROP", "resize", "DATASET.AUGMENT.HFLIP", "False", "DATASET.AUGMENT.ERASING", "0.7")
    data = build_data(cfg_of(data_dir, *base))
    mean, std = list(data.train.preprocess.mean), list(data.train.preprocess.std)
    former = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    erasing = v2.RandomErasing(p=0.7, value=0)
    from makd.data.transforms import sample_seed

    erased = 0
    for i in range(len(data.train)):
        item = data.train[i]
        with torch.random.fork_rng(devices=[]):  # the former TrainTransform: no crop or flip draw, then erasing
            torch.manual_seed(sample_seed(data.train.seed, 0, i))
            expected = erasing(former(data.train.index.load(i))).as_subclass(torch.Tensor)
        got = prepare_batch(default_collate([item]), data.train, CPU)["image"][0]
        assert torch.equal(got, expected)
        erased += int(item["erase"][2] > 0)
    assert 0 < erased < len(data.train)  # p = 0.7: some boxes, some none


def test_erase_mask_marks_each_box():
    boxes = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    mask = erase_mask(boxes, (6, 8))
    assert mask.shape == (2, 1, 6, 8) and int(mask[0].sum()) == 12 and not mask[1].any()
    assert mask[0, 0, 1:4, 2:6].all()


def test_channels_last_key_lays_out_the_batch(data_dir):  # noqa: F811
    data = build_data(cfg_of(data_dir, "DATASET.CHANNELS_LAST", "True"))
    batch = prepare_batch(default_collate([data.test[0], data.test[1]]), data.test, CPU)
    assert batch["image"].dtype == torch.float32 and batch["image"].is_contiguous(memory_format=torch.channels_last)


def test_float_datasets_are_only_moved():
    batch = {"image": torch.randn(2, 3, 4, 4), "label": torch.tensor([0, 1])}
    assert torch.equal(prepare_batch(batch, object(), CPU)["image"], batch["image"])


def test_persistent_training_workers_see_every_epoch(data_dir):  # noqa: F811
    """2 persistent workers (kept across epochs, never told set_epoch) give the batches of 0 workers, per epoch."""
    opts = ("DATASET.AUGMENT.POLICY", "trivial", "DATASET.AUGMENT.MIXUP_ALPHA", "0.4", "SOLVER.BATCH_SIZE", "3")

    def epochs(workers: int) -> list[list[dict]]:
        cfg = cfg_of(data_dir, *opts, "DATASET.NUM_WORKERS", str(workers))
        data = build_data(cfg)
        loader, _ = make_train_loader(data.train, cfg, DistInfo(), False)
        assert loader.persistent_workers == (workers > 0)
        out = []
        for epoch in range(3):
            loader.sampler.set_epoch(epoch)
            data.train.set_epoch(epoch)  # reaches the main process's copy only
            out.append([prepare_batch(b, data.train, CPU) for b in loader])
        return out

    serial, parallel = epochs(0), epochs(2)
    for a_epoch, b_epoch in zip(serial, parallel):
        for a, b in zip(a_epoch, b_epoch):
            for key in ("image", "label", "aspects", "aspect_mask", "mix_lambda", "index", "epoch"):
                assert torch.equal(a[key], b[key]), key
    assert not torch.equal(serial[0][0]["image"], serial[1][0]["image"])  # new draws each epoch


def test_worker_count_from_the_machine(monkeypatch):
    from makd.data import loader_settings

    assert loader_settings.worker_count(0) == 0 and loader_settings.worker_count(3) == 3
    monkeypatch.setattr(loader_settings, "usable_cpus", lambda: 12)
    assert loader_settings.worker_count(-1) == 8  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_settings.worker_count(-1) == 2  # 12 CPUs shared by 4 processes, one each for training
    monkeypatch.setattr(loader_settings, "usable_cpus", lambda: 1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert loader_settings.worker_count(-1) == 0
    settings = loader_settings.loader_settings(2, False, persistent=True)
    assert settings == {"num_workers": 2, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 4}
    assert "prefetch_factor" not in loader_settings.loader_settings(0, True, persistent=True)


def test_bench_data_former_path_draws_the_same_views(image_files):
    """tools/bench_data.py's rebuilt former path: the same View per sample as the uint8 path, pixels within 1/255."""
    from tool_modules import load_tool

    from makd.data.datasets import AspectDataset
    from makd.data.transforms import train_transform

    bench = load_tool("bench_data")
    former = bench.FormerDataset(image_files, bench.FormerTrainTransform(56))
    new = AspectDataset(image_files, train_transform(image_size=56), None, 0, preprocess=DevicePreprocess(MEAN, STD))
    worst = 0.0
    for i in range(len(image_files)):
        a, b = former[i], new[i]
        assert a["view"] == b["view"]
        got = prepare_batch(default_collate([b]), new, CPU)["image"][0]
        worst = max(worst, float((got - a["image"]).abs().max()))
    assert 0 < worst <= 1 / 255 / min(STD) + 1e-6  # at most one level of 255, after normalisation


def test_channels_last_key_trains_a_channels_last_student(release_dataset):
    """DATASET.CHANNELS_LAST: the run trains and exports a student whose convolution weights are channels_last."""
    from tool_modules import load_tool

    out = release_dataset["root"] / "channels_last"
    opts = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0", "DATASET.CHANNELS_LAST", "True"]
    assert load_tool("our_train").main([str(release_dataset["config"]), *opts, "OUTPUT_DIR", str(out)]) == 0
    weights = torch.load(out / "student.pth", weights_only=False)["model"]
    convs = [w for w in weights.values() if w.ndim == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
