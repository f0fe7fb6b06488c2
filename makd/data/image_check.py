"""check_images: decode every image of a run once before training, so a bad file stops the run at its start.

Without it a corrupt test image is met only after a whole training epoch. The check opens and fully
decodes each file with the loaders' own read_rgb (JPEG at reduced scale: the whole stream is still
read, so truncation is found), in the DataLoader workers the run is configured with, and reports
every bad file at once: one line naming the first, what is wrong with it, and how many more there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from makd.data.image_index import ImageIndex
from makd.formats.image_decode import ImageLoadError, read_rgb

# JPEG decodes at the smallest DCT scale that is at least this big: ~8x fewer pixels, same bytes read.
_CHECK_DRAFT_SIZE = (64, 64)
_CHECK_BATCH = 32  # images per worker task: amortises the inter-process hand-off


def image_problem(path: str) -> str:
    """ "" when `path` decodes to an RGB image, else the one-line ImageLoadError message saying why not."""
    try:
        read_rgb(path, draft_size=_CHECK_DRAFT_SIZE)
    except ImageLoadError as err:
        return str(err)
    return ""


class _Problems(Dataset):
    """Item i = the problem of file i ("" when it is fine): workers return strings, never raise."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        return image_problem(self.paths[i])


def _as_list(batch: list[str]) -> list[str]:
    return batch


def bad_images_error(problems: Sequence[str], total: int) -> ImageLoadError:
    """One ImageLoadError for all the bad files found among `total` images (problems: their messages)."""
    if len(problems) == 1:
        return ImageLoadError(problems[0])
    others = [p.removeprefix("cannot read image ").split(": ", 1)[0] for p in problems[1:3]]
    return ImageLoadError(
        f"{problems[0]}; {len(problems) - 1} more of the {total} images cannot be read either "
        f"(next: {', '.join(others)}{', ...' if len(problems) > 3 else ''}); "
        "fix or remove them (DATASET.CHECK_IMAGES False skips this check)"
    )


def find_bad_images(paths: Sequence[str], num_workers: int = 0, progress: bool = True) -> list[str]:
    """Messages of the files in `paths` that cannot be decoded, in path order (decoded in `num_workers` processes)."""
    loader = DataLoader(
        _Problems(paths),
        batch_size=_CHECK_BATCH,
        num_workers=min(num_workers, max(1, len(paths) // _CHECK_BATCH)) if num_workers > 0 else 0,
        collate_fn=_as_list,
        generator=torch.Generator(),  # its own: a loader draws a seed, and the run's RNG must not move
    )
    problems: list[str] = []
    # disable=None: a bar on a terminal only, so logs and captured output stay clean.
    with tqdm(total=len(paths), desc="checking images", unit="img", disable=None if progress else True) as bar:
        for batch in loader:
            problems.extend(p for p in batch if p)
            bar.update(len(batch))
    return problems


def check_images(indexes: ImageIndex | Iterable[ImageIndex | None], num_workers: int = 0, progress: bool = True) -> int:
    """Decode every file-backed image of `indexes` once; returns how many were checked.

    Raises one ImageLoadError naming the first bad file, its problem and how many more are bad.
    In-memory indexes (CIFAR, the uint8 cache) have nothing to decode and are skipped; a file shared
    by several indexes is checked once.
    """
    if isinstance(indexes, ImageIndex):
        indexes = [indexes]
    paths = list(dict.fromkeys(p for ix in indexes if ix is not None and ix.paths is not None for p in ix.paths))
    problems = find_bad_images(paths, num_workers, progress)
    if problems:
        raise bad_images_error(problems, len(paths))
    return len(paths)
