"""`aspects convert`: another project's aspect file -> this project's `{image_id: [p_1..p_Q]}` file.

Image level: each key (an image path of the other project: `jpg/image_05656.jpg`, `image_05656.jpg`,
`C:\\data\\img.png`) is matched to an image of `--images` by the one id rule (makd.formats.image_ids):
the key's extension is dropped, `\\` becomes `/`, and the longest tail of its path that is the tail of
exactly one image id wins (`jpg/image_05656` -> `image_05656` -> id `daisy/image_05656`).
Class level: each key is a class name; every image of `--images` gets its class's row. Names are
matched by `class_key`: case folded, `_` and runs of spaces made one space, a leading `001.` index
(CUB folders) dropped, then a final "s" ignored (`airplanes` / `airplane`); `--class-map` pairs folder
classes with file names that differ otherwise (`Faces_easy` -> `face`; several may share one row).
Multiple-choice blocks (Q questions x M_q options, LaViD's per-class distributions) are flattened
row-major to sum(M_q) targets in [0, 1]: each option's probability becomes one BCE target, which is
defined for any p in [0, 1] (the student then predicts each option independently; the sum-to-one
of a question's options is not enforced). The sidecar records the source, its sha256 and the mapping.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import makd
from makd.formats.aspect_files import write_aspect_file
from makd.formats.errors import ArtifactError
from makd.formats.files import BYTE_ORDER_MARK, read_text_sha256, utc_now
from makd.formats.image_ids import IMAGE_EXTENSIONS
from makd.formats.strict_json import loads_json
from makd.formats.text_lists import parse_text_list
from makd.formats.tolerant_reader import MAX_LISTED, RawAspectFile, flatten_values, value_problems, value_shape

DUPLICATE_POLICIES = ("error", "first", "last")
LEVELS = ("auto", "image", "class")


@dataclass
class FolderImages:
    """Images of one folder: `ids[i]` has class `classes[i]` (top folder, or a release file's class field).

    makd.data.labelled_images lists them from a folder or from a training config."""

    root: str
    ids: list[str]
    classes: list[str]
    layout: str


def class_key(name: str) -> str:
    """The form class names are compared in: "001.Black_footed_Albatross" and "black footed  albatross" agree."""
    text = unicodedata.normalize("NFKC", name).strip()
    text = re.sub(r"^\d+\.", "", text)  # CUB-200 folders: "001.Black_footed_Albatross"
    return " ".join(text.replace("_", " ").casefold().split())


def key_path(key: str) -> str:
    """A key as an id-like path: POSIX separators, no leading "./" or "/", no image extension."""
    path = key.strip().replace("\\", "/").lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    for ext in IMAGE_EXTENSIONS:
        if path.lower().endswith(ext):
            return path[: -len(ext)]
    return path


class ImageKeyMatcher:
    """Maps keys to ids of `ids` by the longest unique path tail (see the module docstring)."""

    def __init__(self, ids: Sequence[str]):
        self._by_tail: dict[str, str | None] = {}  # None = the tail is shared by several ids
        for image in ids:
            parts = image.split("/")
            for start in range(len(parts)):
                tail = "/".join(parts[start:])
                self._by_tail[tail] = None if tail in self._by_tail and self._by_tail[tail] != image else image

    def match(self, key: str) -> tuple[str | None, str]:
        """(image id, "") or (None, why not)."""
        parts = key_path(key).split("/")
        for start in range(len(parts)):
            tail = "/".join(parts[start:])
            if tail in self._by_tail:
                found = self._by_tail[tail]
                if found is None:
                    return None, f"{tail!r} is the name of several images"
                return found, ""
        return None, "no image has this name"


@dataclass
class Conversion:
    """Rows by image id, ready for write_aspect_file, and what the sidecar records about the mapping."""

    rows: dict[str, list[float]]
    level: str
    mapping: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def merge_duplicates(raw: RawAspectFile, policy: str = "error") -> tuple[dict[str, Any], dict[str, int]]:
    """One value per key. Repeats with identical values merge; conflicting ones follow `policy`."""
    if policy not in DUPLICATE_POLICIES:
        raise ArtifactError(f"--on-duplicate {policy!r}: choose one of {', '.join(DUPLICATE_POLICIES)}")
    merged: dict[str, Any] = {}
    identical = conflicting = 0
    for key, value in raw.pairs:
        if key not in merged:
            merged[key] = value
            continue
        if merged[key] == value:
            identical += 1
            continue
        conflicting += 1
        if policy == "error":
            raise ArtifactError(
                f"{raw.path}: key {key!r} appears again with other values; choose --on-duplicate first or last"
            )
        if policy == "last":
            merged[key] = value
    return merged, {"identical_repeats": identical, "conflicting_repeats": conflicting}


def check_values(raw: RawAspectFile, merged: Mapping[str, Any]) -> tuple[int, ...]:
    """The common value shape of `merged`; ArtifactError with the first problems when values are bad."""
    problems = list(raw.problems)
    shapes: dict[tuple[int, ...], str] = {}
    for key, value in merged.items():
        issues = value_problems(key, value)
        problems.extend(issues)
        shape = value_shape(value)
        if not issues and not isinstance(shape, str):
            shapes.setdefault(shape, key)
    if problems:
        more = f" and {len(problems) - 2} more" if len(problems) > 2 else ""
        raise ArtifactError(
            f"{raw.path}: {len(problems)} problems ({'; '.join(problems[:2])}{more}); "
            f"run `tools/aspects.py inspect {raw.path}`"
        )
    if len(shapes) != 1:
        listed = ", ".join(f"{s} (e.g. {k!r})" for s, k in list(shapes.items())[:3])
        raise ArtifactError(f"{raw.path}: rows have different shapes: {listed}")
    return next(iter(shapes))


def read_class_map(path: str | os.PathLike) -> dict[str, str]:
    """{folder class: name in the file} from JSON, or from lines `folder class<TAB>name in the file`.

    Several folder classes may take one file row (LaViD's Caltech-101 `face` for `Faces` and `Faces_easy`), but a
    folder class paired twice (a repeated JSON key, or two lines naming it by class_key) is an error naming both
    lines: only one of the pairs would count. The lines are read as every text list is (makd.formats.text_lists).
    """
    path = Path(path)
    text, _ = read_text_sha256(path, "class map", universal_newlines=False)
    if text.removeprefix(BYTE_ORDER_MARK).lstrip().startswith("{"):
        try:
            mapping = loads_json(text.removeprefix(BYTE_ORDER_MARK), str(path))
        except json.JSONDecodeError as err:
            raise ArtifactError(f"--class-map {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return {str(k): str(v) for k, v in mapping.items()}
    listed = parse_text_list(
        text, str(path), entry="class pairing", same=lambda line: class_key(line.split("\t", 1)[0]), comments=True
    )
    mapping = {}
    for number, line in zip(listed.lines, listed.entries):
        if "\t" not in line:
            raise ArtifactError(f"--class-map {path}:{number}: expected `folder class<TAB>name in the file`")
        source, target = line.split("\t", 1)
        mapping[source.strip()] = target.strip()
    return mapping


def convert_image_level(merged: Mapping[str, Any], images: FolderImages | None, drop_unmatched: bool) -> Conversion:
    """Keys are images: matched to `images` ids, or (no folder) only cleaned by key_path."""
    if images is None:
        rows: dict[str, list[float]] = {}
        for key, value in merged.items():
            cleaned = key_path(key)
            if cleaned in rows:
                raise ArtifactError(f"keys {key!r} and another both become the id {cleaned!r}; pass --images")
            rows[cleaned] = flatten_values(value)
        rule = "key without image extension, POSIX separators (no --images given)"
        return Conversion(rows, "image", {"rule": rule, "rows": len(rows)})
    matcher = ImageKeyMatcher(images.ids)
    rows, source_of, unmatched = {}, {}, []
    for key, value in merged.items():
        found, why = matcher.match(key)
        if found is None:
            unmatched.append((key, why))
            continue
        if found in rows:
            raise ArtifactError(f"keys {source_of[found]!r} and {key!r} both name the image {found!r}; keep one")
        rows[found], source_of[found] = flatten_values(value), key
    if not rows:
        raise ArtifactError(
            f"no key matches an image of {images.root} (first key {next(iter(merged))!r}: {unmatched[0][1]}); "
            "check --images, or use --level class for a file keyed by class names"
        )
    if unmatched and not drop_unmatched:
        shown = "; ".join(f"{k!r}: {why}" for k, why in unmatched[:3])
        raise ArtifactError(
            f"{len(unmatched)} of {len(merged)} keys match no image of {images.root} ({shown}); "
            "pass --drop-unmatched to leave them out"
        )
    without = [i for i in images.ids if i not in rows]
    examples = {source_of[i]: i for i in sorted(rows)[:MAX_LISTED]}
    notes = []
    if unmatched:
        notes.append(f"left out {len(unmatched)} keys that match no image (--drop-unmatched)")
    if without:
        notes.append(f"{len(without)} of {len(images.ids)} images have no row (first: {without[0]})")
    mapping = {
        "rule": "longest path tail of the key (extension dropped) that is the tail of exactly one image id",
        "images": images.root,
        "matched": len(rows),
        "dropped_keys": len(unmatched),
        "dropped_examples": [k for k, _ in unmatched[:MAX_LISTED]],
        "images_without_row": len(without),
        "examples": examples,
    }
    return Conversion(rows, "image", mapping, notes)


def singular(key: str) -> str:
    """`key` without a final "s" (not "ss"): "airplanes" and "airplane" pair."""
    return key[:-1] if len(key) > 3 and key.endswith("s") and not key.endswith("ss") else key


def match_classes(
    folder_classes: Sequence[str],
    file_keys: Sequence[str],
    class_map: Mapping[str, str] | None = None,
    class_map_name: str = "--class-map",
) -> tuple[dict[str, str], list[str]]:
    """({folder class: file key}, folder classes without a key).

    Order of rules: the class map (folder class -> file name; `class_map_name` names it in errors), then equal
    `class_key`, then equal after a final "s" is dropped on both sides ("airplanes" / "airplane") when that pairs
    the two names uniquely.
    """
    class_map = dict(class_map or {})
    by_key: dict[str, list[str]] = {}
    by_singular: dict[str, list[str]] = {}
    for key in file_keys:
        by_key.setdefault(class_key(key), []).append(key)
        by_singular.setdefault(singular(class_key(key)), []).append(key)
    pairs, missing = {}, []
    for name in folder_classes:
        if name in class_map:
            target = class_map[name]
            if target not in file_keys:
                raise ArtifactError(
                    f"{class_map_name} pairs {name!r} with {target!r}, which is not a key of the file"
                )
            pairs[name] = target
            continue
        found = by_key.get(class_key(name)) or by_singular.get(singular(class_key(name))) or []
        if len(found) > 1:
            raise ArtifactError(f"file classes {found[0]!r} and {found[1]!r} both match the folder class {name!r}")
        if found:
            pairs[name] = found[0]
        else:
            missing.append(name)
    return pairs, missing


def missing_classes_text(missing: Sequence[str], file_keys: Sequence[str], pairs: Mapping[str, str]) -> str:
    """The dataset classes without a row, each with the file class that most likely is its row ("'Bengal' (file has
    'Bengal cat'?)"), at most MAX_LISTED of them: what a class map has to pair. Rows no class took are looked at
    first; one name holding the other beats a similar spelling."""
    taken = set(pairs.values())
    untaken = {class_key(k): k for k in file_keys if k not in taken}
    every = {class_key(k): k for k in file_keys}
    hints = []
    for name in missing[:MAX_LISTED]:
        wanted = class_key(name)
        close = None
        for original in (untaken, every):
            held = [k for k in original if k and (k in wanted or wanted in k)]
            close = held or difflib.get_close_matches(wanted, list(original), n=1, cutoff=0.5)
            if close:
                close = original[close[0]]
                break
        hints.append(f"{name!r}" + (f" (file has {close!r}?)" if close else ""))
    more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    return ", ".join(hints) + more


def convert_class_level(
    merged: Mapping[str, Any], images: FolderImages, class_map: Mapping[str, str] | None = None
) -> Conversion:
    """Keys are class names: each image of `images` gets its class's row; a folder class without a row is an error."""
    folder_classes = sorted(set(images.classes))
    file_keys = list(merged)
    pairs, missing = match_classes(folder_classes, file_keys, class_map)
    if missing:
        raise ArtifactError(
            f"{len(missing)} classes of {images.root} have no row in the file: "
            f"{missing_classes_text(missing, file_keys, pairs)}; names are compared case-folded with '_' as space, a "
            "leading 'NNN.' and a final 's' dropped; pair others with --class-map (folder class<TAB>file name)"
        )
    rows = {image: flatten_values(merged[pairs[cls]]) for image, cls in zip(images.ids, images.classes)}
    used = set(pairs.values())
    unused = [k for k in file_keys if k not in used]
    notes = []
    if unused:
        notes.append(f"{len(unused)} file classes are not folder classes and were not used (first: {unused[0]!r})")
    mapping = {
        "rule": "--class-map, then class_key (case-folded, '_' as space, spaces collapsed, leading 'NNN.' dropped), "
        "then the same without a final 's'",
        "images": images.root,
        "layout": images.layout,
        "classes": pairs,
        "unused_file_classes": unused,
        "class_map": dict(class_map or {}),
        "images_per_class": {cls: images.classes.count(cls) for cls in folder_classes},
    }
    return Conversion(rows, "class", mapping, notes)


# Keys looked at before a file none of whose keys names a class is called per-image (an image id never does).
_SAMPLE_KEYS = 1000


def keys_name_classes(
    keys: Sequence[str], class_names: Sequence[str], class_map: Mapping[str, str] | None = None
) -> bool:
    """Whether a file with these keys is about the classes, not the images: at least half of its keys name a
    class, or at least half of the classes have a key (by match_classes' rules).

    Half, not all: a per-class file with a few names the rules do not pair ("Bengal cat" for "Bengal") is still a
    per-class file, and reading it as per image would blame every image of those classes for a missing row instead
    of naming the classes and the class map that pairs them. An image id never names a class (it holds a file name
    or an index), so a per-image file is told apart at its first key that names none; when none of the first 1,000
    keys names a class the rest are not normalised (about 6 us a key), so a million ids take milliseconds.
    """
    if not keys or not class_names:
        return False
    known = {class_key(n) for n in class_names} | {singular(class_key(n)) for n in class_names}
    known |= {class_key(v) for v in (class_map or {}).values()}

    def names_one(key: str) -> bool:
        return class_key(key) in known or singular(class_key(key)) in known

    if all(names_one(k) for k in keys):
        return True  # stops at the first key that names no class: an image id, for a per-image file
    if not any(names_one(k) for k in keys[:_SAMPLE_KEYS]):
        return False
    if 2 * sum(names_one(k) for k in keys) >= len(keys):
        return True
    try:
        _, missing = match_classes(class_names, keys, class_map)
    except ArtifactError:
        return True  # two keys match one class: the per-class reading explains it
    return 2 * len(missing) <= len(class_names)


def choose_level(
    merged: Mapping[str, Any], images: FolderImages | None, class_map: Mapping[str, str] | None = None
) -> str:
    """Level "class" when the keys name the folder classes (keys_name_classes), else "image"."""
    if images is None:
        return "image"
    return "class" if keys_name_classes(list(merged), sorted(set(images.classes)), class_map) else "image"


def convert(
    raw: RawAspectFile,
    images: FolderImages | None = None,
    level: str = "auto",
    class_map: Mapping[str, str] | None = None,
    on_duplicate: str = "error",
    drop_unmatched: bool = False,
) -> Conversion:
    """Rows of `raw` keyed by this project's image ids (see the module docstring)."""
    if level not in LEVELS:
        raise ArtifactError(f"--level {level!r}: choose one of {', '.join(LEVELS)}")
    merged, repeats = merge_duplicates(raw, on_duplicate)
    if not merged:
        raise ArtifactError(f"{raw.path}: holds no rows")
    shape = check_values(raw, merged)
    if level == "auto":
        level = choose_level(merged, images, class_map)
    if level == "class":
        if images is None:
            raise ArtifactError("--level class needs --images (the folder whose classes the rows are spread to)")
        result = convert_class_level(merged, images, class_map)
    else:
        result = convert_image_level(merged, images, drop_unmatched)
    result.mapping["repeats"] = repeats
    if repeats["identical_repeats"]:
        result.notes.append(f"merged {repeats['identical_repeats']} repeated keys with identical values")
    if len(shape) > 1:
        result.mapping["multiple_choice"] = {
            "questions": shape[0],
            "options_per_question": list(shape[1:]),
            "columns": "row-major: question 1's options, then question 2's, ...",
        }
        result.notes.append(f"flattened {shape[0]} multiple-choice questions to {sum(shape[1:])} targets")
    return result


def write_conversion(out: str | os.PathLike, raw: RawAspectFile, result: Conversion, command: str = "") -> None:
    """The converted file (validated, atomic) and its sidecar: source, source sha256, level, mapping."""
    meta = {
        "written_by": "makd aspects convert",
        "tool_version": makd.__version__,
        "source": os.path.abspath(raw.path),
        "source_sha256": raw.sha256,
        "source_format": raw.format,
        "level": result.level,
        "num_aspects": len(next(iter(result.rows.values()))),
        "mapping": result.mapping,
        "notes": result.notes,
        "command": command,
        "converted": utc_now(),
    }
    write_aspect_file(out, result.rows, meta=meta)
