"""The extraction loop: every item of a source (or of one shard of it) x every question -> an aspect file.

An item is an image of a folder (ids by the one image-id rule, `makd.formats.image_ids`) or a ground-truth box
(`makd/mllm/box_items.py`); the loop does not tell them apart (`makd/mllm/items.py`). Items are decoded and
prepared (tiled) in loader threads while the model scores the previous ones; finished rows go to
`<output>.partial.jsonl` at once; the final JSON and its sidecar are written atomically at the end, after
which the partial file is removed.

Views: besides the image as it is ("identity"), the horizontally flipped image ("hflip", `--views flip`) can be
scored in the same pass; it gets its own aspect file `<output stem>.flip.json`, sidecar and partial file, so a
trainer that flips an image can use the teacher's answer for the view it drew.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps

import makd
from makd.atomic_files import check_output_location
from makd.errors import raise_if_stopped
from makd.formats.aspect_files import write_aspect_file
from makd.formats.errors import ArtifactError
from makd.formats.files import sidecar_path
from makd.formats.image_decode import ImageLoadError
from makd.formats.questions import questions_sha256, read_questions
from makd.mllm.cost import Cost, CostMeter, total_cost
from makd.mllm.errors import ExtractionError
from makd.mllm.items import Item, ItemSource
from makd.mllm.partial_rows import PartialState, PartialWriter, partial_path, read_partial, settings_mismatch
from makd.mllm.scorer import Scorer

# describe() entries that do not change the numbers: a resumed run may differ in them.
VOLATILE_KEYS = frozenset(
    {
        "one_sided_answers",
        "retries",
        "batch_size",
        "images_per_forward",
        "prefix_mode",
        "packed_attention",
        "device",
        "concurrency",
        "rate_limit",
    }
)
# --views name -> view recorded in files; each view is a function of the decoded RGB image.
VIEWS = {"identity": "identity", "flip": "hflip"}
VIEW_TRANSFORMS = {"identity": lambda image: image, "hflip": ImageOps.mirror}
VIEW_SUFFIXES = {"identity": "", "hflip": ".flip"}


def view_output(output: str | os.PathLike, view: str) -> Path:
    """The aspect file of `view`: `output` itself for the identity view, `<stem>.flip.json` for hflip."""
    output = Path(output)
    return output.with_name(f"{output.stem}{VIEW_SUFFIXES[view]}{output.suffix}")


def parse_views(text: str) -> tuple[str, ...]:
    """--views "flip" or "identity,flip" -> ("identity", "hflip"); the identity view is always scored."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        raise ExtractionError(f"--views {text!r}: unknown view {unknown[0]!r} (use {', '.join(VIEWS)})")
    return tuple(v for v in VIEW_TRANSFORMS if v == "identity" or v in {VIEWS[n] for n in names})


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count` contiguous slices of the source's items (images sorted by id)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str, option: str = "--shard") -> Shard:
        """`I/N` (shard I of N, I in 0..N-1) as a Shard; anything else is one ExtractionError line saying what to
        write instead (`option` names where the text came from: "--shard", or "RANK/WORLD_SIZE")."""
        parts = text.strip().split("/")
        if len(parts) != 2 or not all(re.fullmatch(r"[+-]?\d+", part.strip()) for part in parts):
            raise ExtractionError(
                f"{option} {text!r} is not I/N, two whole numbers (e.g. 0/4 for the first of four shards)"
            )
        index, count = (int(part) for part in parts)
        if count < 1:
            raise ExtractionError(f"{option} {text!r}: the number of shards N must be at least 1 (e.g. 0/4)")
        if not 0 <= index < count:
            raise ExtractionError(
                f"{option} {text!r}: the shard index must be in 0..{count - 1}, shards are numbered from 0 (the last "
                f"of {count} is {count - 1}/{count})"
            )
        return cls(index, count)

    def select(self, items: Sequence[Any]) -> list[Any]:
        """Contiguous slice: shard i holds items[i*n//N : (i+1)*n//N] (sizes differ by at most one)."""
        n = len(items)
        return list(items[self.index * n // self.count : (self.index + 1) * n // self.count])

    def describe(self) -> dict:
        return {"index": self.index, "count": self.count}

    def holding(self, num_items: int) -> list[int]:
        """The indexes of the shards of `count` that hold at least one of `num_items` items (all when there are as
        many items as shards; with more shards than items, some are empty)."""
        return [i for i in range(self.count) if (i + 1) * num_items // self.count > i * num_items // self.count]


@dataclass
class ExtractionPlan:
    """Checked inputs of a run, known before any model is loaded."""

    questions: list[str]
    questions_path: Path
    source: ItemSource
    items: list[Item]  # this shard, after --limit
    output: Path
    shard: Shard | None
    limit: int | None
    resume: bool
    overwrite: bool
    strict: bool
    views: tuple[str, ...] = ("identity",)

    def outputs(self) -> dict[str, Path]:
        """view -> its aspect file."""
        return {view: view_output(self.output, view) for view in self.views}


def plan_extraction(
    questions_path: str | os.PathLike,
    source: ItemSource,
    output: str | os.PathLike,
    shard: Shard | None = None,
    limit: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    views: Sequence[str] = ("identity",),
) -> ExtractionPlan:
    """Validate questions, items (a source already checked its own input) and output paths; raises a one-line
    error on the first problem.

    Every file the run will write (aspect files, sidecars, partial files) is checked to be writable here,
    before the model loads.
    """
    questions = read_questions(questions_path)
    items = (shard or Shard()).select(source.items)
    if limit is not None:
        if limit < 1:
            raise ExtractionError(f"--limit {limit}: must be >= 1")
        items = items[:limit]
    output = Path(output)
    if output.suffix.lower() != ".json":
        raise ExtractionError(f"--output {output}: the aspect file must end in .json")
    if not items:  # more shards than items: an empty shard has nothing to do (empty_shard_note), not an error
        return ExtractionPlan(questions, Path(questions_path), source, [], output, shard, limit, resume, overwrite,
                              strict, tuple(views))  # fmt: skip
    for view in views:
        target = view_output(output, view)
        partial = partial_path(target)
        # An output next to its partial file is from a run killed before it cleaned up: --resume redoes it.
        if target.exists() and not overwrite and not (resume and partial.exists()):
            raise ExtractionError(f"--output {target} already exists; pass --overwrite to replace it")
        if partial.exists() and not (resume or overwrite):
            raise ExtractionError(
                f"{partial} exists from an unfinished run; pass --resume to continue it or --overwrite"
            )
        for path, what in ((target, "--output"), (sidecar_path(target), "sidecar"), (partial, "partial file")):
            check_output_location(path, what)
    return ExtractionPlan(
        questions=questions,
        questions_path=Path(questions_path),
        source=source,
        items=items,
        output=output,
        shard=shard,
        limit=limit,
        resume=resume,
        overwrite=overwrite,
        strict=strict,
        views=tuple(views),
    )


def empty_shard_note(plan: ExtractionPlan) -> str:
    """What an empty shard's run says (it writes nothing and succeeds, so a job array of more shards than items
    finishes; merge_shards reads from the other shards' sidecars that this one holds nothing)."""
    shard, total = plan.shard or Shard(), len(plan.source.items)
    holding = shard.holding(total)
    shown = ", ".join(map(str, holding[:8])) + (", ..." if len(holding) > 8 else "")
    return (
        f"--shard {shard.index}/{shard.count} holds none of the {total} {plan.source.nouns} ({shard.count} shards for "
        f"{total} {plan.source.nouns}); nothing to score or write: merge_shards needs only the shards that hold some "
        f"({shown}); fewer shards (--shard I/{total} at most) leave none idle"
    )


def run_settings(plan: ExtractionPlan, scorer: Scorer, view: str = "identity") -> dict:
    """Everything that determines the numbers of `view`; a resumed run must match the partial file's copy."""
    teacher = {k: v for k, v in scorer.describe().items() if k not in VOLATILE_KEYS}
    settings = {
        "questions_sha256": questions_sha256(plan.questions),
        **plan.source.settings(),
        "shard": plan.shard.describe() if plan.shard else None,
        "limit": plan.limit,
        "teacher": teacher,
    }
    if view != "identity":  # the identity view's settings stay as before, so older partial files resume
        settings["view"] = view
    return settings


@dataclass
class LoadedItem:
    item: Item
    prepared: dict[str, Any] = field(default_factory=dict)  # view -> scorer.prepare(view of the item's image)
    error: str | None = None


def load_item(item: Item, source: ItemSource, scorer: Scorer, views: Sequence[str] = ("identity",)) -> LoadedItem:
    """Read one item and prepare each of `views`; a failure is recorded, not raised (the run goes on)."""
    try:
        rgb = source.read(item)
        return LoadedItem(item, prepared={v: scorer.prepare(VIEW_TRANSFORMS[v](rgb)) for v in views})
    except ImageLoadError as err:
        return LoadedItem(item, error=str(err)[:300])
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable image"
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"[:300]
        return LoadedItem(item, error=reason)


def prefetch(
    work: Sequence[tuple[Item, Sequence[str]]], source: ItemSource, scorer: Scorer, threads: int, ahead: int
) -> Iterator[LoadedItem]:
    """Loaded items (item, views to prepare) in order, with up to `ahead` decoded in the background."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="makd-loader") as pool:
        queue: deque = deque()
        position = 0
        while position < len(work) or queue:
            while position < len(work) and len(queue) < max(1, ahead):
                item, views = work[position]
                queue.append(pool.submit(load_item, item, source, scorer, views))
                position += 1
            yield queue.popleft().result()


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


@dataclass
class ViewRun:
    """One view's state during a run: its rows (resumed + new), this run's failures and its partial file."""

    view: str
    output: Path
    state: PartialState | None
    rows: dict[str, list[float]]
    errors: dict[str, tuple[str, str]]  # id -> (path, reason)
    writer: PartialWriter | None = None


def _open_view(plan: ExtractionPlan, scorer: Scorer, view: str, planned: set[str]) -> ViewRun:
    output = view_output(plan.output, view)
    partial = partial_path(output)
    settings = run_settings(plan, scorer, view)
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
    rows = {k: v for k, v in (state.rows if state else {}).items() if k in planned}
    return ViewRun(view, output, state, rows, {})


def run_extraction(
    plan: ExtractionPlan,
    scorer: Scorer,
    images_per_step: int = 1,
    loader_threads: int = 2,
    progress: bool = True,
    tool: str = "InternVL_logits/make_makd_logits_json.py",
) -> dict:
    """Score every planned item in every view, append rows to the partial files, then write the aspect files.

    Returns the sidecar dict of the identity view. Rows already in a partial file (with --resume) are kept,
    not recomputed.
    """
    from tqdm import tqdm

    planned = {item.id for item in plan.items}
    runs = [_open_view(plan, scorer, view, planned) for view in plan.views]  # every refusal before any write
    work = []
    for item in plan.items:
        missing = [r.view for r in runs if item.id not in r.rows]
        if missing:
            work.append((item, missing))
    for r in runs:
        r.writer = PartialWriter(partial_path(r.output), run_settings(plan, scorer, r.view), r.state)
    started, scored = time.monotonic(), 0
    # Cost is recorded in the identity view's partial file and sidecar: one pass scores every view.
    meter = CostMeter(getattr(scorer, "cost", None) or Cost())
    bar = tqdm(
        total=len(plan.items),
        initial=len(plan.items) - len(work),
        unit="img" if plan.source.noun == "image" else plan.source.noun,
        disable=not progress,
        desc="aspects",
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        step: list[LoadedItem] = []
        ahead = max(2 * images_per_step, loader_threads)
        for loaded in prefetch(work, plan.source, scorer, loader_threads, ahead):
            raise_if_stopped()  # Ctrl-C / SIGTERM between items, the rows written so far kept (makd.errors)
            item = loaded.item
            if loaded.error is not None:
                what = "" if plan.source.noun == "image" else f" (box {item.id})"
                if plan.strict:
                    raise ExtractionError(f"unreadable image {item.path}{what}: {loaded.error} (--strict stops here)")
                _warn(f"warning: skipped unreadable image {item.path}{what}: {loaded.error}")
                for r in runs:
                    r.errors[item.id] = (str(item.path), loaded.error)
                    r.writer.add_error(item.id, loaded.error)
                bar.update(1)
                continue
            step.append(loaded)
            if len(step) == images_per_step:
                scored += _score_step(step, plan, scorer, runs, meter)
                bar.update(len(step))
                step = []
        if step:
            scored += _score_step(step, plan, scorer, runs, meter)
            bar.update(len(step))
    finally:
        bar.close()
        for r in runs:
            if r.writer is not None:
                r.writer.close()
    return _finish(plan, scorer, runs, tool, time.monotonic() - started, scored, meter)


def _score_step(
    step: list[LoadedItem], plan: ExtractionPlan, scorer: Scorer, runs: list[ViewRun], meter: CostMeter
) -> int:
    prompts = plan.source.prompts(plan.questions)
    for r in runs:
        loaded = [one for one in step if r.view in one.prepared]
        if not loaded:
            continue
        values = np.asarray(scorer.score([one.prepared[r.view] for one in loaded], prompts), dtype=np.float64)
        for item, row in zip((one.item for one in loaded), values):
            missing = [q + 1 for q, v in enumerate(row) if not math.isfinite(v)]  # question numbers, from 1
            if missing:
                # Never invented: the image gets no row and is listed; --resume retries it.
                reason = f"no Yes/No probability for question(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}"
                where = ("" if plan.source.noun == "image" else f" box {item.id}") + (
                    "" if r.view == "identity" else f" ({r.view} view)"
                )
                if plan.strict:
                    raise ExtractionError(f"image {item.path}{where}: {reason} (--strict stops here)")
                _warn(f"warning: image {item.path}{where}: {reason}; row left out")
                r.errors[item.id] = (str(item.path), reason)
                r.writer.add_error(item.id, reason)
                continue
            r.rows[item.id] = [float(v) for v in row]
            r.writer.add_row(item.id, r.rows[item.id])
        if r.view == "identity":
            r.writer.add_cost(meter.increment())  # a resumed run's sidecar adds this step's cost to its own
        r.writer.flush()
    return len(step)


def _finish(
    plan: ExtractionPlan, scorer: Scorer, runs: list[ViewRun], tool: str, elapsed: float, scored: int, meter: CostMeter
) -> dict:
    shard_ids = [item.id for item in plan.items]
    prompts = plan.source.prompts(plan.questions)
    outputs = plan.outputs()
    metas: list[tuple[ViewRun, dict]] = []
    for r in runs:
        skipped = {k: v for k, v in r.errors.items() if k not in r.rows}
        if not r.rows:
            raise ExtractionError(
                f"no {plan.source.noun} could be scored ({len(skipped)} failed, see the warnings); "
                f"nothing written to {r.output}"
            )
        meta = {
            "tool": tool,
            "tool_version": makd.__version__,
            "view": r.view,
            "questions_file": str(plan.questions_path),
            "questions_sha256": questions_sha256(plan.questions),
            "num_questions": len(plan.questions),
            "questions": plan.questions,
            **({"prompts": prompts} if prompts != plan.questions else {}),  # what was asked, when a source frames it
            **plan.source.sidecar(),
            "num_images_planned": len(plan.items),
            "shard": None
            if plan.shard is None
            else {**plan.shard.describe(), "first_id": shard_ids[0], "last_id": shard_ids[-1],
                  "num_items_all_shards": len(plan.source.items)},  # fmt: skip
            "limit": plan.limit,
            "skipped_images": [{"id": k, "path": p, "reason": why} for k, (p, why) in sorted(skipped.items())],
            "teacher": scorer.describe(),
            "resumed_rows": len(r.state.rows) if r.state else 0,
            "seconds_this_run": round(elapsed, 3),
            "images_per_second_this_run": round(scored / elapsed, 4) if elapsed > 0 else None,
        }
        if r.view == "identity":
            this_run = meter.this_run()
            resumed = len(r.state.rows) if r.state else 0
            meta["cost"] = total_cost(r.state.cost if r.state else None, resumed, this_run)
            meta["cost_this_run"] = this_run
        else:
            meta["cost"] = None
            meta["cost_note"] = f"scored in the same pass as {outputs['identity'].name}, whose cost covers both"
        if r.view != "identity":
            meta["main_output"] = outputs["identity"].name
        elif len(outputs) > 1:
            meta["view_outputs"] = {v: p.name for v, p in outputs.items() if v != "identity"}
        if len(r.rows) + len(skipped) != len(plan.items):  # cannot happen unless the code is wrong: refuse to write
            raise ArtifactError(f"{r.output}: {len(r.rows)} rows + {len(skipped)} skipped != {len(plan.items)} items")
        metas.append((r, meta))
    # Every view's file is written before any partial file goes: a kill in between leaves all partials to resume.
    for r, meta in metas:
        write_aspect_file(r.output, r.rows, meta)
    for r, meta in metas:
        partial_path(r.output).unlink(missing_ok=True)
        if meta["skipped_images"]:
            _warn(f"warning: {len(meta['skipped_images'])} image(s) left out of {r.output}; "
                  "listed in its sidecar (skipped_images)")  # fmt: skip
    return metas[0][1]
