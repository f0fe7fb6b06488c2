"""The start-of-run image check, and image errors raised inside DataLoader workers."""

from __future__ import annotations

import pickle

import pytest
import torch
from test_data_helpers import random_image
from torch.utils.data import DataLoader

from makd.data.datasets import AspectDataset
from makd.data.image_cache import cache_splits
from makd.data.image_check import check_images, find_bad_images
from makd.data.image_index import ImageIndex
from makd.formats.image_decode import ImageLoadError


def folder(tmp_path, count=40):
    paths = []
    for k in range(count):
        path = tmp_path / f"img_{k:02d}.png"
        random_image(k, size=(16, 16)).save(path)
        paths.append(str(path))
    return paths


def index_of(paths, source="train"):
    return ImageIndex([f"i{k}" for k in range(len(paths))], [0] * len(paths), ["c"], source, "", list(paths))


def spoil(paths):
    """Turn three files into a text file, a zero-byte file and a truncated PNG; return them in path order."""
    text, empty, cut = paths[3], paths[17], paths[30]
    with open(text, "w") as fh:
        fh.write("not pixels\n")
    open(empty, "wb").close()
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    return text, empty, cut


@pytest.mark.parametrize("workers", [0, 2])
def test_check_finds_every_bad_file_and_names_the_first(tmp_path, workers):
    paths = folder(tmp_path)
    assert check_images(index_of(paths), num_workers=workers) == 40
    text, empty, cut = spoil(paths)
    problems = find_bad_images(paths, num_workers=workers)
    assert problems == [
        f"cannot read image {text}: not an image (no image format recognises its 11 bytes); replace or remove the file",
        f"cannot read image {empty}: empty file (0 bytes), not an image",
        f"cannot read image {cut}: truncated or corrupt (image file is truncated); re-copy or remove the file",
    ]
    with pytest.raises(ImageLoadError) as caught:
        check_images([index_of(paths[:20]), None, index_of(paths[20:], "test")], num_workers=workers)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {text}: not an image")
    assert f"2 more of the 40 images cannot be read either (next: {empty}, {cut})" in message
    assert "\n" not in message and "DATASET.CHECK_IMAGES False" in message


def test_cache_pass_reports_like_the_check_across_splits(tmp_path):
    paths = folder(tmp_path, 12)
    good = cache_splits([index_of(paths[:6]), None, index_of(paths[6:])], 16, progress=False)
    assert good[1] is None and all(ix.pixels is not None for ix in (good[0], good[2]))
    open(paths[2], "w").write("x")
    open(paths[9], "wb").close()
    with pytest.raises(
        ImageLoadError, match=rf"^cannot read image {paths[2]}: not an image.*; 1 more of the 12 images"
    ):
        cache_splits([index_of(paths[:6]), index_of(paths[6:])], 16, progress=False)


def test_image_error_from_a_worker_is_the_original_line(tmp_path):
    paths = folder(tmp_path, 8)
    open(paths[5], "w").write("text named .png")
    dataset = AspectDataset(index_of(paths), torch.nn.Identity(), None, 0)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=lambda batch: batch)
    with pytest.raises(ImageLoadError) as caught:
        list(loader)
    assert str(caught.value) == (
        f"cannot read image {paths[5]}: not an image (no image format recognises its 15 bytes); "
        "replace or remove the file"
    )
    assert caught.value.args == (str(caught.value),)
    restored = pickle.loads(pickle.dumps(caught.value))
    assert type(restored) is ImageLoadError and str(restored) == str(caught.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_check_leaves_the_global_random_state_alone(tmp_path, workers):
    """The model is initialised after the check: checking (or not) must not change the run's random numbers."""
    paths = folder(tmp_path, 4)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_images(index_of(paths), num_workers=workers)
    assert torch.equal(torch.rand(3), expected)
