"""Target-aware views: what a training view (mirrored, cropped) does to the teacher's aspect targets.

The teacher (stage 2) answered the whole, unflipped image. On a mirrored view the target of an
orientation question ("Is the head on the left?") is wrong, and a small crop may cut away what a
question asks about. A `ViewPolicy` turns (stored targets, drawn view) into (targets, mask) for one
sample; the mask [Q] is 1 where the BCE supervises the aspect and 0 where it ignores it:

- mirrored view, teacher rows of the mirrored image given (DATASET.ASPECT_JSON_FLIP): those rows;
- mirrored view otherwise, MaKD.FLIP_POLICY "mask": flip-sensitive aspects masked;
  "mirror": each declared pair (i, j) swaps targets, flip-sensitive aspects without a pair masked;
  "keep": targets unchanged (the official code's behaviour);
- crop showing less than MaKD.MIN_CROP_AREA of the image, MaKD.SMALL_CROP "mask": all aspects masked
  (the class label still trains; "bound" instead keeps crops from being that small, see transforms).
- Aspects without a target (NaN) are always masked.

Flip-sensitive questions are 0-based positions in the questions file, from MaKD.FLIP_SENSITIVE, from
"flip_sensitive" in the sidecar of DATASET.QUESTIONS, and the members of every mirror pair
(MaKD.FLIP_MIRROR or the sidecar's "flip_mirror").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from makd.data.transforms import View
from makd.errors import ConfigError
from makd.formats.files import read_sidecar


def _indices(values: Iterable, num_aspects: int, where: str) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_aspects:
            raise ConfigError(
                f"{where}: {value!r} is not a question position in 0..{num_aspects - 1} "
                "(0-based line numbers of the questions file)"
            )
        out.append(int(value))
    return out


def _pairs(values: Iterable, num_aspects: int, where: str) -> list[tuple[int, int]]:
    pairs, seen = [], set()
    for pair in values:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"{where}: {pair!r} is not a pair [i, j] of question positions")
        i, j = _indices(pair, num_aspects, where)
        if i == j or i in seen or j in seen:
            raise ConfigError(f"{where}: question {i if i in seen or i == j else j} is in more than one mirror pair")
        seen.update((i, j))
        pairs.append((min(i, j), max(i, j)))
    return sorted(pairs)


class ViewPolicy:
    """(targets [Q], View, mirrored-image targets [Q] | None) -> (targets [Q], mask [Q] float)."""

    def __init__(
        self,
        num_aspects: int,
        *,
        flip_sensitive: Sequence[int] = (),
        flip_mirror: Sequence[tuple[int, int]] = (),
        flip_policy: str = "mask",
        min_crop_area: float = 0.0,
        small_crop: str = "mask",
        sources: Sequence[str] = (),
    ) -> None:
        q = int(num_aspects)
        mirror = _pairs(flip_mirror, q, "MaKD.FLIP_MIRROR")
        sensitive = set(_indices(flip_sensitive, q, "MaKD.FLIP_SENSITIVE")) | {i for pair in mirror for i in pair}
        self.num_aspects, self.flip_policy = q, flip_policy
        self.flip_sensitive, self.flip_mirror = sorted(sensitive), mirror
        self.min_crop_area, self.small_crop, self.sources = float(min_crop_area), small_crop, list(sources)
        permutation = torch.arange(q)
        for i, j in mirror:
            permutation[i], permutation[j] = j, i
        paired = {i for pair in mirror for i in pair}
        self._permutation = permutation
        self._sensitive = torch.tensor(self.flip_sensitive, dtype=torch.long)
        self._unpaired = torch.tensor(sorted(sensitive - paired), dtype=torch.long)

    def apply(
        self, targets: torch.Tensor, view: View, flipped_targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and BCE mask of one sample under `view` (see the module docstring for the rules)."""
        if view.hflip and flipped_targets is not None:
            targets = flipped_targets
        elif view.hflip and self.flip_policy == "mirror":
            targets = targets[self._permutation]
        mask = torch.isfinite(targets).to(torch.float32)
        if view.hflip and flipped_targets is None:
            if self.flip_policy == "mask":
                mask[self._sensitive] = 0.0
            elif self.flip_policy == "mirror":
                mask[self._unpaired] = 0.0
        if self.small_crop == "mask" and view.crop_area < self.min_crop_area:
            mask.zero_()
        return targets, mask

    def describe(self, flip_rows: str = "") -> dict:
        """JSON-ready record for summary.json: what a mirrored or small view does to the targets."""
        return {
            "flip_policy": "teacher_views" if flip_rows else self.flip_policy,
            "flip_rows": flip_rows or None,
            "flip_sensitive": self.flip_sensitive,
            "flip_mirror": [list(p) for p in self.flip_mirror],
            "flip_sensitive_from": self.sources,
            "min_crop_area": self.min_crop_area,
            "small_crop": self.small_crop if self.min_crop_area > 0 else None,
        }


def view_policy_from_cfg(cfg, num_aspects: int) -> ViewPolicy:
    """The policy of `cfg`: MaKD.FLIP_* keys plus the questions file's sidecar ("flip_sensitive", "flip_mirror")."""
    m = cfg.MaKD
    sensitive, mirror, sources = list(m.FLIP_SENSITIVE), [tuple(p) for p in m.FLIP_MIRROR], []
    if sensitive or mirror:
        sources.append("config")
    if cfg.DATASET.QUESTIONS:
        meta = read_sidecar(cfg.DATASET.QUESTIONS) or {}
        where = f"{cfg.DATASET.QUESTIONS}.meta.json"
        side_sensitive, side_mirror = meta.get("flip_sensitive") or [], meta.get("flip_mirror") or []
        if not isinstance(side_sensitive, list) or not isinstance(side_mirror, list):
            raise ConfigError(f"{where}: flip_sensitive and flip_mirror must be lists")
        if side_sensitive or side_mirror:
            sources.append(where)
        sensitive += _indices(side_sensitive, num_aspects, f"{where} flip_sensitive")
        declared = {tuple(sorted(p)) for p in _pairs(mirror, num_aspects, "MaKD.FLIP_MIRROR")}
        extra = [p for p in _pairs(side_mirror, num_aspects, f"{where} flip_mirror") if p not in declared]
        mirror += extra
    return ViewPolicy(
        num_aspects,
        flip_sensitive=sensitive,
        flip_mirror=mirror,
        flip_policy=m.FLIP_POLICY,
        min_crop_area=m.MIN_CROP_AREA,
        small_crop=m.SMALL_CROP,
        sources=sources,
    )
