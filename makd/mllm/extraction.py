"""The extraction loop: every image of a folder (or of one shard of it) x every question -> an aspect file.

Images are listed with the one image-id rule (`makd.data.image_ids`), so the output joins stage 3's datasets
as is. Images are decoded and prepared (tiled) in loader threads while the model scores the previous ones;
finished rows go to `<output>.partial.jsonl` at once; the final JSON and its sidecar are written atomically
at the end, after which the partial file is removed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import makd
from makd.artifacts import ArtifactError, read_questions, sha256_file, write_aspect_file
from makd.data.image_ids import image_id, list_image_files
from makd.errors import MakdError
from makd.mllm.partial_rows import PartialState, PartialWriter, partial_path, read_partial, settings_mismatch
from makd.mllm.scorer import Scorer

# describe() entries that do not change the numbers: a resumed run may differ in them.
VOLATILE_KEYS = frozenset(
    {"one_sided_answers", "retries", "batch_size", "prefix_mode", "device", "concurrency", "rate_limit"}
)
IMAGE_ID_RULE = "path relative to the image root, POSIX separators, no extension"


class ExtractionError(MakdError, RuntimeError):
    """The run cannot start or go on (bad input, an existing output, a strict-mode image failure)."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count` contiguous slices of the sorted image list."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ExtractionError(f"--shard {text!r} is not I/N (e.g. 0/4 for the first of four shards)") from None
        if count < 1 or not 0 <= index < count:
            raise ExtractionError(f"--shard {text}: index must be in 0..{count - 1} (shards are numbered from 0)")
        return cls(index, count)

    def select(self, items: Sequence[Any]) -> list[Any]:
        """Contiguous slice: shard i holds items[i*n//N : (i+1)*n//N] (sizes differ by at most one)."""
        n = len(items)
        return list(items[self.index * n // self.count : (self.index + 1) * n // self.count])

    def describe(self) -> dict:
        return {"index": self.index, "count": self.count}


@dataclass
class ExtractionPlan:
    """Checked inputs of a run, known before any model is loaded."""

    questions: list[str]
    questions_path: Path
    image_root: Path
    all_files: list[Path]
    files: list[Path]  # this shard, after --limit
    output: Path
    shard: Shard | None
    limit: int | None
    resume: bool
    overwrite: bool
    strict: bool


def plan_extraction(
    questions_path: str | os.PathLike,
    image_root: str | os.PathLike,
    output: str | os.PathLike,
    shard: Shard | None = None,
    limit: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
) -> ExtractionPlan:
    """Validate questions, images and output paths; raises a one-line error on the first problem."""
    questions = read_questions(questions_path)
    root = Path(image_root)
    if not root.is_dir():
        raise ExtractionError(f"--images {root}: folder does not exist (check the path)")
    try:
        all_files = list_image_files(root)
    except ValueError as err:
        raise ExtractionError(f"--images {root}: {err}") from None
    if not all_files:
        raise ExtractionError(f"--images {root}: no image files found (looked for .png, .jpg, ... recursively)")
    files = (shard or Shard()).select(all_files)
    if limit is not None:
        if limit < 1:
            raise ExtractionError(f"--limit {limit}: must be >= 1")
        files = files[:limit]
    if not files:
        raise ExtractionError(
            f"--shard {shard.index}/{shard.count}: this shard holds no images ({len(all_files)} in total)"
        )
    output = Path(output)
    if output.suffix.lower() != ".json":
        raise ExtractionError(f"--output {output}: the aspect file must end in .json")
    if output.exists() and not overwrite:
        raise ExtractionError(f"--output {output} already exists; pass --overwrite to replace it")
    if partial_path(output).exists() and not (resume or overwrite):
        raise ExtractionError(
            f"{partial_path(output)} exists from an unfinished run; pass --resume to continue it or --overwrite"
        )
    return ExtractionPlan(
        questions=questions,
        questions_path=Path(questions_path),
        image_root=root,
        all_files=all_files,
        files=files,
        output=output,
        shard=shard,
        limit=limit,
        resume=resume,
        overwrite=overwrite,
        strict=strict,
    )


def run_settings(plan: ExtractionPlan, scorer: Scorer) -> dict:
    """Everything that determines the numbers; a resumed run must match the partial file's copy."""
    teacher = {k: v for k, v in scorer.describe().items() if k not in VOLATILE_KEYS}
    return {
        "questions_sha256": sha256_file(plan.questions_path),
        "image_root": str(plan.image_root.resolve()),
        "shard": plan.shard.describe() if plan.shard else None,
        "limit": plan.limit,
        "teacher": teacher,
    }


@dataclass
class LoadedImage:
    image_id: str
    path: Path
    prepared: Any = None
    error: str | None = None


def load_image(path: Path, root: Path, scorer: Scorer) -> LoadedImage:
    """Decode and prepare one image; a failure is recorded, not raised (the run goes on)."""
    key = image_id(path, root)
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
        if rgb.width < 1 or rgb.height < 1:
            raise ValueError("image has no pixels")
        return LoadedImage(key, path, prepared=scorer.prepare(rgb))
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable image"
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"[:300]
        return LoadedImage(key, path, error=reason)


def prefetch(files: Sequence[Path], root: Path, scorer: Scorer, threads: int, ahead: int) -> Iterator[LoadedImage]:
    """Loaded images in order, with up to `ahead` decoded in the background."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="makd-loader") as pool:
        queue: deque = deque()
        position = 0
        while position < len(files) or queue:
            while position < len(files) and len(queue) < max(1, ahead):
                queue.append(pool.submit(load_image, files[position], root, scorer))
                position += 1
            yield queue.popleft().result()


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def run_extraction(
    plan: ExtractionPlan,
    scorer: Scorer,
    images_per_step: int = 1,
    loader_threads: int = 2,
    progress: bool = True,
    tool: str = "InternVL_logits/make_makd_logits_json.py",
) -> dict:
    """Score every planned image, append rows to the partial file, then write the aspect file + sidecar.

    Returns the sidecar dict. Rows already in the partial file (with --resume) are kept, not recomputed.
    """
    from tqdm import tqdm

    settings = run_settings(plan, scorer)
    partial = partial_path(plan.output)
    state: PartialState | None = None
    if partial.exists() and plan.resume and not plan.overwrite:
        state = read_partial(partial)
        if state.settings is not None:
            difference = settings_mismatch(state.settings, settings)
            if difference:
                raise ExtractionError(
                    f"--resume: {partial} was made with other settings ({difference}); "
                    "rerun with the same settings or pass --overwrite to start over"
                )
    planned = {image_id(f, plan.image_root) for f in plan.files}
    rows = {k: v for k, v in (state.rows if state else {}).items() if k in planned}
    todo = [f for f in plan.files if image_id(f, plan.image_root) not in rows]
    errors: dict[str, tuple[str, str]] = {}  # id -> (path, reason), this run's failures
    writer = PartialWriter(partial, settings, state)
    started, scored = time.monotonic(), 0
    bar = tqdm(
        total=len(plan.files),
        initial=len(plan.files) - len(todo),
        unit="img",
        disable=not progress,
        desc="aspects",
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        step: list[LoadedImage] = []
        ahead = max(2 * images_per_step, loader_threads)
        for loaded in prefetch(todo, plan.image_root, scorer, loader_threads, ahead):
            if loaded.error is not None:
                if plan.strict:
                    raise ExtractionError(f"unreadable image {loaded.path}: {loaded.error} (--strict stops here)")
                _warn(f"warning: skipped unreadable image {loaded.path}: {loaded.error}")
                errors[loaded.image_id] = (str(loaded.path), loaded.error)
                writer.add_error(loaded.image_id, loaded.error)
                bar.update(1)
                continue
            step.append(loaded)
            if len(step) == images_per_step:
                scored += _score_step(step, plan, scorer, writer, rows, errors)
                bar.update(len(step))
                step = []
        if step:
            scored += _score_step(step, plan, scorer, writer, rows, errors)
            bar.update(len(step))
    finally:
        bar.close()
        writer.close()
    return _finish(plan, scorer, rows, errors, state, tool, time.monotonic() - started, scored)


def _score_step(
    step: list[LoadedImage],
    plan: ExtractionPlan,
    scorer: Scorer,
    writer: PartialWriter,
    rows: dict[str, list[float]],
    errors: dict[str, tuple[str, str]],
) -> int:
    values = np.asarray(scorer.score([item.prepared for item in step], plan.questions), dtype=np.float64)
    for item, row in zip(step, values):
        missing = [q for q, v in enumerate(row) if not math.isfinite(v)]
        if missing:
            # Never invented: the image gets no row and is listed; --resume retries it.
            reason = f"no Yes/No probability for question(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            if plan.strict:
                raise ExtractionError(f"image {item.path}: {reason} (--strict stops here)")
            _warn(f"warning: image {item.path}: {reason}; row left out")
            errors[item.image_id] = (str(item.path), reason)
            writer.add_error(item.image_id, reason)
            continue
        rows[item.image_id] = [float(v) for v in row]
        writer.add_row(item.image_id, rows[item.image_id])
    writer.flush()
    return len(step)


def _finish(
    plan: ExtractionPlan,
    scorer: Scorer,
    rows: dict[str, list[float]],
    errors: dict[str, tuple[str, str]],
    state: PartialState | None,
    tool: str,
    elapsed: float,
    scored: int,
) -> dict:
    skipped = {k: v for k, v in errors.items() if k not in rows}
    if not rows:
        raise ExtractionError(
            f"no image could be scored ({len(skipped)} failed, see the warnings); nothing written to {plan.output}"
        )
    shard_ids = [image_id(f, plan.image_root) for f in plan.files]
    meta = {
        "tool": tool,
        "tool_version": makd.__version__,
        "questions_file": str(plan.questions_path),
        "questions_sha256": sha256_file(plan.questions_path),
        "num_questions": len(plan.questions),
        "questions": plan.questions,
        "image_root": str(plan.image_root.resolve()),
        "image_id_rule": IMAGE_ID_RULE,
        "num_images_in_folder": len(plan.all_files),
        "num_images_planned": len(plan.files),
        "shard": None
        if plan.shard is None
        else {**plan.shard.describe(), "first_id": shard_ids[0], "last_id": shard_ids[-1]},
        "limit": plan.limit,
        "skipped_images": [{"id": k, "path": p, "reason": r} for k, (p, r) in sorted(skipped.items())],
        "teacher": scorer.describe(),
        "resumed_rows": len(state.rows) if state else 0,
        "seconds_this_run": round(elapsed, 3),
        "images_per_second_this_run": round(scored / elapsed, 4) if elapsed > 0 else None,
    }
    if len(rows) + len(skipped) != len(plan.files):  # cannot happen unless the code is wrong: refuse to write
        raise ArtifactError(f"{plan.output}: {len(rows)} rows + {len(skipped)} skipped != {len(plan.files)} images")
    write_aspect_file(plan.output, rows, meta)
    partial_path(plan.output).unlink(missing_ok=True)
    if skipped:
        _warn(f"warning: {len(skipped)} image(s) left out of {plan.output}; listed in its sidecar (skipped_images)")
    return meta
