"""Join the aspect files of `--shard I/N` runs into one, after checking that together they are complete.

Checks: every shard 0..N-1 that holds items is there exactly once (with more shards than items some hold none,
write nothing and are not needed), all were made with the same questions, teacher settings
and image root, no image id appears twice, each shard accounts for all of its images (rows + listed
skipped images), and, when the image folder is given, the union covers every image in it. Box-level shards
(`--boxes`) must also share the instances file and box settings, and together hold every box it has.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from makd.formats.aspect_files import read_aspect_file, read_exact_rows, write_aspect_file
from makd.formats.errors import ArtifactError
from makd.formats.files import read_sidecar, sha256_file
from makd.formats.image_ids import image_id, list_image_files
from makd.mllm.cost import COST_FIELDS, add_costs
from makd.mllm.extraction import VOLATILE_KEYS, Shard

# "item" and "boxes" (the instances file's hash, view, margin, ...) are only in box-level sidecars.
SAME_KEYS = (
    *("questions_sha256", "num_questions", "image_root", "num_images_in_folder", "limit", "view"),
    *("item", "boxes"),
)


def _settings(meta: dict) -> dict:
    teacher = {k: v for k, v in (meta.get("teacher") or {}).items() if k not in VOLATILE_KEYS}
    return {**{k: meta.get(k) for k in SAME_KEYS}, "teacher": teacher}


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(dotted path, value in a, value in b) of the first leaf where two nested settings differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    return None if a == b else (path, a, b)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def merge_shards(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Check and merge shard aspect files into `output` (written atomically with a sidecar); returns the sidecar."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise ArtifactError(f"merge output {output} already exists; pass --overwrite to replace it")
    if not inputs:
        raise ArtifactError("no shard files given to merge")
    shards: dict[int, tuple[Path, dict]] = {}
    rows: dict[str, list[float]] = {}
    skipped: list[dict] = []
    reference: tuple[Path, dict] | None = None
    for raw in inputs:
        path = Path(raw)
        table = read_aspect_file(path)
        meta = read_sidecar(path)
        if meta is None or not meta.get("shard"):
            raise ArtifactError(f"{path}: no sidecar with shard information; only outputs of --shard runs merge")
        shard = meta["shard"]
        index, count = int(shard["index"]), int(shard["count"])
        if index in shards:
            raise ArtifactError(f"{path}: shard {index}/{count} is also given as {shards[index][0]}")
        if reference is None:
            reference = (path, meta)
        elif int(reference[1]["shard"]["count"]) != count:
            raise ArtifactError(
                f"{path}: made as one of {count} shards but {reference[0]} as one of {reference[1]['shard']['count']}"
            )
        elif _settings(meta) != _settings(reference[1]):
            key, here, there = first_difference(_settings(meta), _settings(reference[1]))
            raise ArtifactError(
                f"{path}: made with {key} {_shown(here)} but {reference[0]} with {_shown(there)}; shards of one run "
                f"must share every setting: rerun the shards made with the other {key} (same command, one setting)"
            )
        listed = len(table.ids) + len(meta.get("skipped_images", []))
        if listed != int(meta.get("num_images_planned", -1)):
            raise ArtifactError(
                f"{path}: holds {listed} of the {meta.get('num_images_planned')} images of its shard; "
                "rerun that shard with --resume"
            )
        exact = read_exact_rows(path)  # the JSON floats themselves (the table holds float32 copies)
        for key, values in exact.items():
            if key in rows:
                raise ArtifactError(f"{path}: image {key!r} is also in another shard")
            rows[key] = values
        skipped.extend(meta.get("skipped_images", []))
        shards[index] = (path, meta)
    count = int(reference[1]["shard"]["count"])
    total = reference[1]["shard"].get("num_items_all_shards")  # older sidecars lack it: then every shard is needed
    holding = Shard(0, count).holding(int(total)) if total is not None else list(range(count))
    missing = sorted(set(holding) - set(shards))
    if missing:
        raise ArtifactError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing from the merge; run them (or pass their "
            "files) and merge again"
        )
    first = reference[1]
    if first.get("item") == "box":
        if image_root is not None:
            raise ArtifactError(
                "--images checks the images of an image-level run; box-level shards are checked against the box "
                "count of their instances file (drop --images)"
            )
        planned = sum(int(m["num_images_planned"]) for _, m in shards.values())
        expected = int(first["boxes"]["num_boxes_large_enough"])
        if first.get("limit") is None and planned != expected:
            raise ArtifactError(f"the shards hold {planned} of the {expected} boxes of {first['boxes']['instances']}")
    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            raise ArtifactError(f"--images {root}: folder does not exist (check the path)")
        try:
            expected = {image_id(f, root) for f in list_image_files(root)}
        except ValueError as err:
            raise ArtifactError(f"--images {root}: {err}") from None
        covered = set(rows) | {s["id"] for s in skipped}
        if expected - covered:
            lost = sorted(expected - covered)
            raise ArtifactError(f"{len(lost)} image(s) of {root} are in no shard (first: {lost[0]!r})")
    meta = {
        **{k: v for k, v in first.items() if k not in ("num_images", "date", "shard")},
        "shard": None,
        "num_images_planned": sum(int(m["num_images_planned"]) for _, m in shards.values()),
        "skipped_images": sorted(skipped, key=lambda s: s["id"]),
        "merged_from": [
            {"path": str(p), "sha256": sha256_file(p), "shard": m["shard"]} for _, (p, m) in sorted(shards.items())
        ],
    }
    for key in ("seconds_this_run", "images_per_second_this_run", "resumed_rows", "cost_this_run"):
        meta.pop(key, None)
    costs = [m.get("cost") for _, m in shards.values()]
    if meta.get("view", "identity") == "identity":  # a flip file's cost is in its main file's sidecar
        # a shard without a recorded cost (an older makd) leaves the total unknown, not undercounted
        meta["cost"] = {k: None for k in COST_FIELDS} if None in costs else add_costs(costs)
    write_aspect_file(output, rows, meta)
    return meta
