"""What a run's LLM teacher cost to label: found through the target file the run's summary.json names.

A run's summary records the target file it trained on and its sha256 (`aspect_file` / `aspect_sha256`; for the
LaViD distillers `class_targets_file` / `class_targets_sha256`). The file's sidecar holds the stage-2 `cost`
(makd.mllm.cost: prompts scored, prompt tokens, tokens processed, seconds). A file converted by `aspects convert`
names its source and the source's sha256 instead; the cost is read from the source's sidecar. Every way this can
fail (the file gone or changed since the run, no sidecar, no cost recorded) is a note in the table, never an error:
a report of finished runs is still worth having when a teacher file was moved.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from makd.analysis.run_folders import RunResult
from makd.formats.errors import ArtifactError
from makd.formats.files import read_sidecar, sha256_file

NO_TEACHER = "—"
TINY_TEACHER_NOTE = "tiny random teacher (--model tiny): its numbers mean nothing"
MAX_SOURCE_HOPS = 3  # a converted file's source may itself be a conversion


@dataclass(frozen=True)
class TeacherCost:
    """A run's teacher cost: `cost` (COST_FIELDS, None values unknown) when found, else why not in `note`."""

    cost: dict[str, Any] | None
    note: str  # NO_TEACHER, "" when the cost was found, else the reason it is missing
    sidecar: str = ""  # the sidecar the cost was read from

    @property
    def has_teacher(self) -> bool:
        return self.note != NO_TEACHER


def _teacher_file(run: RunResult) -> tuple[str, str] | None:
    """(path, sha256) of the file of teacher targets the run trained on, or None when it used no teacher."""
    summary = run.summary
    if summary.get("class_targets_file"):
        return str(summary["class_targets_file"]), str(summary.get("class_targets_sha256") or "")
    if not summary.get("num_aspects") or not summary.get("aspect_file"):
        return None
    if summary.get("targets") == "random":  # the control replaces the teacher's answers by uniform noise
        return None
    return str(summary["aspect_file"]), str(summary.get("aspect_sha256") or "")


def _located(path: str, run: RunResult) -> Path | None:
    """The file as recorded (relative paths: to the working folder, else to the run folder's parents)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate if candidate.exists() else None
    for base in run.path.resolve().parents:
        if (base / candidate).exists():
            return base / candidate
    return None


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, hashed once per report for all the runs that name it (aspect files can be GBs)."""
    return sha256_file(path)


def _cost_of(path: Path, sha256: str, shown: str, hops: int = 0) -> TeacherCost:
    stat = path.stat()
    if sha256 and _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns) != sha256:
        return TeacherCost(None, f"{shown} changed since the run (sha256 differs)")
    try:
        meta = read_sidecar(path)
    except ArtifactError:
        return TeacherCost(None, f"sidecar of {shown} is not valid JSON")
    if meta is None:
        return TeacherCost(None, f"no sidecar ({shown}.meta.json)")
    sidecar = str(path) + ".meta.json"
    teacher = meta.get("teacher")
    # Stage 2's --model tiny: a random teacher that tries the plumbing; the table must not let it pass for one.
    note = TINY_TEACHER_NOTE if isinstance(teacher, dict) and teacher.get("tiny_teacher") else ""
    if isinstance(meta.get("cost"), dict):
        return TeacherCost(meta["cost"], note, sidecar)
    if isinstance(meta.get("cost_this_run"), dict) and not meta.get("resumed_rows"):
        return TeacherCost(meta["cost_this_run"], note, sidecar)
    source = meta.get("source")
    if isinstance(source, str) and hops < MAX_SOURCE_HOPS:  # an `aspects convert` output: the source holds it
        found = Path(source)
        if not found.exists():
            return TeacherCost(None, f"{shown} was converted from {source}, which is missing")
        return _cost_of(found, str(meta.get("source_sha256") or ""), source, hops + 1)
    return TeacherCost(None, f"no cost recorded in the sidecar of {shown}")


def teacher_cost(run: RunResult) -> TeacherCost:
    """The teacher cost of one finished run (see the module docstring)."""
    found = _teacher_file(run)
    if found is None:
        return TeacherCost(None, NO_TEACHER)
    path, sha256 = found
    located = _located(path, run)
    if located is None:
        return TeacherCost(None, f"teacher file {path} is missing")
    return _cost_of(located, sha256, path)


def condition_cost(runs: Sequence[RunResult]) -> TeacherCost:
    """The cost of a condition's teacher: that of its first run, noted when its seeds used different files."""
    costs = [teacher_cost(run) for run in runs]
    if not costs:
        return TeacherCost(None, NO_TEACHER)
    files = {_teacher_file(run) for run in runs}
    if len(files) > 1:
        first = costs[0]
        return TeacherCost(first.cost, (first.note + "; " if first.note else "") + "seeds used different files")
    return costs[0]


def _count(value: Any, unit: str) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return f"{value:,.1f} {unit}" if unit == "s" else f"{int(value):,} {unit}"


def format_cost(found: TeacherCost) -> str:
    """One table cell: "1,850 prompts, 86,360 tokens, 6.8 s", "12,800 prompts (simulated)", "—" or the note."""
    if found.cost is None:
        return found.note
    cost = found.cost
    parts = [
        _count(cost.get("prompts_scored"), "prompts"),
        _count(cost.get("tokens_processed"), "tokens"),
        _count(cost.get("seconds"), "s"),
    ]
    text = ", ".join(p for p in parts if p) or "not recorded"
    if cost.get("simulated"):
        text += " (simulated)"
    return text + (f" ({found.note})" if found.note else "")


def cost_columns(found: TeacherCost) -> list[str]:
    """CSV cells: prompts scored, prompt tokens, tokens processed, seconds, note (empty when unknown)."""
    cost = found.cost or {}
    cells = []
    for key in ("prompts_scored", "prompt_tokens", "tokens_processed", "seconds"):
        value = cost.get(key)
        cells.append("" if value is None else str(value))
    note = found.note if found.cost is None or found.note else ("simulated" if cost.get("simulated") else "")
    return [*cells, note]
