"""Detection datasets of a run: a COCO set's images with their boxes, labels and aspect rows, and the controls.

Box level (DETECTION.ASPECT_LEVEL box): the row of box `<image id>#<annotation id>` (makd.formats.coco.box_id)
in the aspect file; a box without a row (stage 2 skipped it as too small, or it is missing) stays in the
detection targets with a NaN row, which the aspect BCE leaves unsupervised. Image level: the row of the image's
id (makd.formats.image_ids.image_id: the file_name without extension), NaN when absent. A file none of whose ids
match is refused, as it almost always belongs to another set.

The controls of MaKD.TARGETS (makd.data.aspect_targets.make_targets) act on the supervised rows, grouped by
category: per box its label; per image the label of its largest box (images without boxes form one group).

Training augmentation is a horizontal flip with probability DETECTION.HFLIP_PROB, drawn per (SEED, epoch, index)
as in classification, so it does not depend on the worker and a resumed run draws the same flips. The teacher
answered the unflipped image, so a flipped item's rows go through the run's view policy (makd.data.views:
MaKD.FLIP_POLICY and the flip-sensitive questions): a masked entry becomes NaN, i.e. unsupervised.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from makd.data.aspect_targets import make_targets
from makd.data.splits import stratified_split
from makd.data.transforms import View, sample_seed
from makd.data.views import ViewPolicy
from makd.formats.aspect_files import AspectTable
from makd.formats.coco import CocoSet, box_id, parse_box_id
from makd.formats.errors import ArtifactError
from makd.formats.image_ids import image_id


@dataclass
class AspectRows:
    """Aspect rows of a set's targets: per box [G_i, Q] and per image [Q] (NaN = unsupervised)."""

    boxes: list[np.ndarray]  # one [G_i, Q] array per image, in the set's image order
    images: np.ndarray  # [N, Q]
    num_supervised: int = 0  # boxes (box level) or images (image level) with a row
    num_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)


def image_key(coco: CocoSet, coco_image_id: int) -> str:
    """The image-level row id of an image: the project's one image-id rule over the images folder."""
    return image_id(coco.path_of(coco_image_id), coco.images_dir)


def join_rows(coco: CocoSet, table: AspectTable | None, level: str, num_aspects: int, role: str) -> AspectRows:
    """The table's rows for `coco`'s boxes (level "box") or images ("image"); NaN rows where none (see the module)."""
    nan_boxes = [np.full((len(coco.boxes_of(i.id)), num_aspects), np.nan, np.float32) for i in coco.images]
    rows = AspectRows(nan_boxes, np.full((len(coco.images), num_aspects), np.nan, np.float32))
    if table is None:
        return rows
    where = table.index()
    if level == "box":
        parse_box_id(table.ids[0])  # an image-level file is refused with the box-id rule's own message
        keys = [[box_id(i.id, b.annotation_id) for b in coco.boxes_of(i.id)] for i in coco.images]
        for n, image_keys in enumerate(keys):
            for g, key in enumerate(image_keys):
                if key in where:
                    rows.boxes[n][g] = table.values[where[key]]
        flat = [key for image_keys in keys for key in image_keys]
    else:
        flat = [image_key(coco, i.id) for i in coco.images]
        for n, key in enumerate(flat):
            if key in where:
                rows.images[n] = table.values[where[key]]
    found = [key for key in flat if key in where]
    rows.num_supervised, rows.num_missing = len(found), len(flat) - len(found)
    rows.missing_examples = [key for key in flat if key not in where][:3]
    if flat and not found:
        raise ArtifactError(
            f"none of the {len(flat)} {role} {'boxes' if level == 'box' else 'images'} of {coco.source} has a row in "
            f"{table.path} (its ids look like {', '.join(repr(i) for i in table.ids[:2])}, these like "
            f"{', '.join(repr(k) for k in flat[:2])}); run stage 2 on this set"
            + (" with --boxes" if level == "box" else "")
        )
    return rows


def _largest_box_label(coco: CocoSet, coco_image_id: int) -> int:
    boxes = coco.boxes_of(coco_image_id)
    if not boxes:
        return 0
    return max(boxes, key=lambda b: (b.box[2] - b.box[0]) * (b.box[3] - b.box[1])).label


def validation_carve(coco: CocoSet, fraction: float, seed: int) -> tuple[CocoSet, CocoSet]:
    """(kept, held out) images of a training set for DATASET.VAL_FRACTION: the classification carve
    (makd.data.splits.stratified_split: per group, ranked by a hash of seed and image id), grouped by the
    category of each image's largest box (images without boxes form one group), ids by the image-id rule."""
    ids = [image_key(coco, image.id) for image in coco.images]
    labels = [_largest_box_label(coco, image.id) for image in coco.images]
    kept, held = stratified_split(ids, labels, fraction, seed)
    if not held:
        raise ArtifactError(f"DATASET.VAL_FRACTION {fraction} holds out no image of {coco.source}; raise it")
    return coco.subset([coco.images[p].id for p in kept]), coco.subset([coco.images[p].id for p in held])


def apply_control(coco: CocoSet, rows: AspectRows, level: str, mode: str, seed: int) -> AspectRows:
    """MaKD.TARGETS on the supervised rows (teacher: unchanged); NaN rows stay NaN."""
    if mode == "teacher":
        return rows
    if level == "box":
        stacked = np.concatenate(rows.boxes) if rows.boxes else np.zeros((0, rows.images.shape[1]), np.float32)
        labels = np.array([b.label for i in coco.images for b in coco.boxes_of(i.id)], dtype=np.int64)
    else:
        stacked = rows.images
        labels = np.array([_largest_box_label(coco, i.id) for i in coco.images], dtype=np.int64)
    supervised = np.isfinite(stacked).all(axis=1)
    out = stacked.copy()
    out[supervised] = make_targets(mode, stacked[supervised], labels[supervised], seed)
    if level == "box":
        return replace(rows, boxes=list(np.split(out, np.cumsum([len(b) for b in rows.boxes])[:-1])))
    return replace(rows, images=out)


class DetectionDataset(Dataset):
    """Item i = {"image": float [3, H, W] in [0, 1] (the detector normalises), "target": {"boxes" [G, 4] x1 y1 x2 y2
    pixels, "labels" [G] in 1..K, "aspects" [G, Q], "image_aspects" [Q]}, "index": i, "image_id": COCO id}.

    Training items (the sampler's (epoch, index) keys) are mirrored with probability `hflip_prob`, boxes and rows
    with them (see the module); an item asked by its index alone (evaluation) never is.
    """

    def __init__(
        self,
        coco: CocoSet,
        rows: AspectRows,
        *,
        hflip_prob: float = 0.0,
        seed: int = 0,
        policy: ViewPolicy | None = None,
    ) -> None:
        if hflip_prob > 0 and policy is None and rows.images.shape[1]:
            raise ValueError("a flipping detection set with aspect rows needs the run's view policy")
        self.coco, self.rows = coco, rows
        self.hflip_prob, self.seed, self.policy = float(hflip_prob), int(seed), policy

    def __len__(self) -> int:
        return len(self.coco.images)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the epoch comes with each training key."""

    def flips(self, epoch: int, i: int) -> bool:
        """Whether training item i is mirrored in `epoch` (a function of SEED, epoch and i only)."""
        if self.hflip_prob <= 0:
            return False
        return bool(np.random.default_rng(sample_seed(self.seed, epoch, i)).random() < self.hflip_prob)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, i = key if isinstance(key, tuple) else (None, key)  # the training sampler's (epoch, index) keys
        entry = self.coco.images[i]
        boxes = self.coco.boxes_of(entry.id)
        image = pil_to_tensor(self.coco.read_image(entry.id)).float().div_(255.0)
        target = {
            "boxes": torch.tensor([b.box for b in boxes], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([b.label for b in boxes], dtype=torch.int64),
            "aspects": torch.from_numpy(self.rows.boxes[i]),
            "image_aspects": torch.from_numpy(self.rows.images[i]),
        }
        if epoch is not None and self.flips(epoch, i):
            image = image.flip(-1)
            width = image.shape[-1]
            x1, y1, x2, y2 = target["boxes"].unbind(-1)
            target["boxes"] = torch.stack([width - x2, y1, width - x1, y2], dim=-1)
            target["aspects"] = self._mirrored_rows(target["aspects"])
            target["image_aspects"] = self._mirrored_rows(target["image_aspects"][None])[0]
        return {"image": image, "target": target, "index": i, "image_id": entry.id}

    def _mirrored_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """[G, Q] rows of a mirrored item: the view policy's targets, NaN where it masks."""
        if self.policy is None or rows.shape[-1] == 0:
            return rows
        out = rows.clone()
        for g, row in enumerate(rows):
            targets, mask = self.policy.apply(row, View(hflip=True))
            out[g] = torch.where(mask > 0, targets, torch.full_like(targets, float("nan")))
        return out

    @staticmethod
    def collate_fn(items: list[dict]) -> dict:
        """Images of different sizes stay a list (the detector batches them after its own resize)."""
        return {
            "images": [item["image"] for item in items],
            "targets": [item["target"] for item in items],
            "index": torch.tensor([item["index"] for item in items]),
            "image_ids": [item["image_id"] for item in items],
        }
