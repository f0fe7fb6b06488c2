"""Write a dataset split's images as PNG files named by their ids, so stage 2 can run on any layout.

`OUT_DIR/<id>.png` for every image: pointing stage 2 at OUT_DIR (`--images OUT_DIR`) gives back
exactly the ids stage 3 uses (CIFAR100 "train/00000" -> OUT_DIR/train/00000.png). PNG is lossless,
so the exported pixels are the ones training reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tqdm import tqdm

from makd.data.image_index import ImageIndex


def export_images(index: ImageIndex, out_dir: str | os.PathLike, progress: bool = False) -> int:
    """Write `out_dir/<id>.png` for each image of `index`; returns how many were written.

    Files that already exist are kept, so an interrupted export resumes; each file is written to a
    temporary name and renamed, so a crash never leaves half a PNG under a real id.
    """
    out_dir = Path(out_dir)
    written = 0
    for i in tqdm(range(len(index)), desc=f"export {index.source}", disable=not progress):
        target = out_dir / f"{index.ids[i]}.png"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                index.load(i).save(fh, format="PNG")
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written += 1
    return written
