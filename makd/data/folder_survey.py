"""What a class-folder dataset holds, for a starting config: `DATA/train/<class>/<image>` and `DATA/test/<class>/...`.

The folders are listed as the trainer lists them (makd.formats.image_ids: the same files, the same ids, the class
of an image its top folder), so the classes and counts are the ones training will see. A bounded sample of
training images (stratified over the classes, seeded) is decoded with the loaders' decoder
(makd.formats.image_decode.read_rgb) for the image sizes (from the file's header: the full size, even where the
statistics use a reduced JPEG decode), whether the images are grey (every sampled image has R = G = B within
JPEG's colour noise), and the per-channel mean and std in [0, 1] (each image weighted equally, from a copy at most
128 px on its longer side: sums over pixels are smooth functions of scale). Every problem a user can act on is
one FolderSurveyError line naming the folder or file and the fix.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from makd.errors import MakdError
from makd.formats.errors import DatasetFormatError, DatasetMissingError
from makd.formats.image_decode import ImageLoadError, read_rgb
from makd.formats.image_ids import image_id, list_image_files

STATISTICS_SIDE = 128  # px: the longer side of the copy the statistics are taken from
GREY_TOLERANCE = 3  # 8-bit levels: JPEG's chroma noise on a grey picture stays within this
DEFAULT_SAMPLE = 500


class FolderSurveyError(MakdError, ValueError):
    """The folder is not a class-folder dataset the trainer can read, or one of its images is unreadable."""


@dataclass
class FolderSurvey:
    """Classes and counts of both splits, and what a sample of the training images looks like."""

    data_dir: Path
    classes: list[str]
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    sample_sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each sampled image
    grey: bool = False
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    sample_seed: int = 0

    @property
    def train_dir(self) -> Path:
        return self.data_dir / "train"

    @property
    def test_dir(self) -> Path:
        return self.data_dir / "test"

    @property
    def num_train(self) -> int:
        return sum(self.train_counts.values())

    @property
    def num_test(self) -> int:
        return sum(self.test_counts.values())

    @property
    def short_sides(self) -> np.ndarray:
        return np.array([min(w, h) for w, h in self.sample_sizes])

    def short_side_percentiles(self) -> tuple[float, float, float]:
        """10th, 50th and 90th percentile of the sampled images' shorter side, in px."""
        p10, p50, p90 = np.percentile(self.short_sides, [10, 50, 90])
        return float(p10), float(p50), float(p90)

    def size_range(self) -> str:
        """ "28x28" when every sampled image has that size, else "from 28x28 to 640x480" (by area)."""
        ordered = sorted(self.sample_sizes, key=lambda s: (s[0] * s[1], s))
        small, large = ordered[0], ordered[-1]
        if small == large:
            return f"{small[0]}x{small[1]}"
        return f"from {small[0]}x{small[1]} to {large[0]}x{large[1]}"


def _class_files(split_dir: Path, data_dir: Path) -> dict[str, list[Path]]:
    """{class folder: its image files} of one split, listed as the trainer lists them (makd.formats.image_ids:
    recursive, hidden entries skipped, two files with one id refused); the errors say what the layout must be."""
    layout = f"put images in {data_dir}/train/<class>/<image> and {data_dir}/test/<class>/<image>"
    if not split_dir.is_dir():
        raise FolderSurveyError(f"{split_dir} is not a folder; {layout}")
    try:
        files = list_image_files(split_dir)
    except (DatasetFormatError, DatasetMissingError) as err:
        raise FolderSurveyError(str(err)) from None
    by_class: dict[str, list[Path]] = {
        entry.name: [] for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith(".")
    }
    for path in files:
        key = image_id(path, split_dir)
        if "/" not in key:
            raise FolderSurveyError(f"{split_dir} holds images outside class folders ({path.name}, ...); {layout}")
        by_class.setdefault(key.split("/", 1)[0], []).append(path)
    if not by_class:
        raise FolderSurveyError(f"{split_dir} holds no class folders; {layout}")
    return dict(sorted(by_class.items()))


def list_class_folders(data_dir: str | os.PathLike) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(train, test) image files per class folder, checked: at least two classes, no empty class folder in train,
    a test folder with images, and no test class without training images."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FolderSurveyError(f"{data_dir} is not a folder (give the folder that holds train/ and test/)")
    train = _class_files(data_dir / "train", data_dir)
    empty = [name for name, files in train.items() if not files]
    if empty:
        raise FolderSurveyError(f"{data_dir / 'train' / empty[0]} holds no images (.png, .jpg, ...); "
                                "add some or remove the folder")  # fmt: skip
    if len(train) < 2:
        raise FolderSurveyError(f"{data_dir / 'train'} holds one class folder ({next(iter(train))}); "
                                "a classifier needs at least two classes")  # fmt: skip
    test = {name: files for name, files in _class_files(data_dir / "test", data_dir).items() if files}
    if not test:
        raise FolderSurveyError(f"{data_dir / 'test'} holds no images (.png, .jpg, ...) in its class folders; "
                                "put some test images there (a few per class)")  # fmt: skip
    unknown = sorted(name for name in test if name not in train)
    if unknown:
        raise FolderSurveyError(f"{data_dir / 'test' / unknown[0]} is a class with no training images in "
                                f"{data_dir / 'train'}; train and test share their class folders")  # fmt: skip
    return train, test


def _stratified_sample(paths_by_class: dict[str, list[Path]], size: int, seed: int) -> list[Path]:
    """Up to `size` paths, the classes taking turns (each class's order shuffled with `seed`)."""
    rng = np.random.default_rng(seed)
    queues = {name: [paths[i] for i in rng.permutation(len(paths))] for name, paths in paths_by_class.items()}
    chosen: list[Path] = []
    while len(chosen) < size and any(queues.values()):
        for name in sorted(queues):
            if queues[name] and len(chosen) < size:
                chosen.append(queues[name].pop())
    return chosen


def _image_statistics(path: Path) -> tuple[tuple[int, int], bool, np.ndarray, np.ndarray]:
    """(width, height), grey or not, per-channel mean [3] and mean of squares [3] of one image in [0, 1]."""
    image = read_rgb(path, draft_size=(STATISTICS_SIDE, STATISTICS_SIDE))  # the loaders' decoder: same pixels
    try:
        with Image.open(path) as header:
            size = header.size
    except OSError as err:  # read_rgb decoded it, so this is a race (the file changed): say so plainly
        raise ImageLoadError(f"cannot read image {path}: {err}") from None
    image.thumbnail((STATISTICS_SIDE, STATISTICS_SIDE))
    pixels = np.asarray(image, dtype=np.float64) / 255.0  # [H, W, 3]
    spread = np.asarray(image, dtype=np.int16)
    grey = int(np.abs(spread[..., 0] - spread[..., 1]).max(initial=0)) <= GREY_TOLERANCE and int(
        np.abs(spread[..., 1] - spread[..., 2]).max(initial=0)
    ) <= GREY_TOLERANCE
    flat = pixels.reshape(-1, 3)
    return size, grey, flat.mean(axis=0), (flat**2).mean(axis=0)


def survey_class_folders(
    data_dir: str | os.PathLike, sample: int = DEFAULT_SAMPLE, seed: int = 0, progress: bool = True
) -> FolderSurvey:
    """Count both splits and decode a stratified sample of at most `sample` training images (see the module)."""
    if sample < 1:
        raise FolderSurveyError(f"--sample {sample}: must be at least 1 image")
    data_dir = Path(data_dir)
    train, test = list_class_folders(data_dir)
    chosen = _stratified_sample(train, sample, seed)
    survey = FolderSurvey(data_dir, sorted(train), {name: len(files) for name, files in train.items()},
                          {name: len(files) for name, files in test.items()}, sample_seed=seed)  # fmt: skip
    means, squares, greys = [], [], Counter()
    bar = tqdm(chosen, desc="measuring images", unit="img", disable=None if progress else True, leave=False)
    for path in bar:
        try:
            size, grey, mean, square = _image_statistics(path)
        except ImageLoadError as err:
            raise FolderSurveyError(str(err)) from None  # names the file and the fix
        survey.sample_sizes.append(size)
        greys[grey] += 1
        means.append(mean)
        squares.append(square)
    mean = np.mean(means, axis=0)
    std = np.sqrt(np.maximum(np.mean(squares, axis=0) - mean**2, 1e-12))
    survey.grey = greys[False] == 0
    survey.mean = [round(float(v), 4) for v in mean]
    survey.std = [round(float(v), 4) for v in std]
    return survey
