"""The training-health findings of runs (makd/engine/health.py) where results are read: a mark on the numbers and
plot labels of a run that has one, and a note naming each finding, so a run that learned nothing never sits in a
table unmarked.

Findings come from summary.json's `health` (a finished run) or, for an unfinished run, from its metrics.jsonl rows.
This module reads JSON only (no torch): tools/report.py imports no training code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from makd.analysis.run_folders import RunResult

MARK = "⚠"  # after a table's test-metric cells, with the number of its note: "6.25 ⚠1"
DOC = "docs/health.md"


def summary_findings(summary: dict[str, Any]) -> list[dict]:
    """The findings of a summary.json (none when it predates the checks or they were off)."""
    health = summary.get("health")
    if not isinstance(health, dict):
        return []
    return [f for f in health.get("findings") or [] if isinstance(f, dict) and "check" in f]


def run_findings(run: RunResult) -> list[dict]:
    return summary_findings(run.summary)


def folder_findings(run_dir: str | os.PathLike) -> list[dict]:
    """The findings of a run folder: summary.json's, else those its metrics.jsonl rows hold so far."""
    run_dir = Path(run_dir)
    summary, metrics = run_dir / "summary.json", run_dir / "metrics.jsonl"
    try:
        if summary.exists():
            return summary_findings(json.loads(summary.read_text(encoding="utf-8")))
        if metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
            return [f for row in rows for f in row.get("health") or [] if isinstance(f, dict) and "check" in f]
    except (OSError, json.JSONDecodeError, AttributeError):
        return []  # unreadable: the plot or table reading it reports the file itself
    return []


def _number(numbers: dict, key: str, digits: int = 3) -> str:
    value = numbers.get(key)
    return "?" if not isinstance(value, (int, float)) else f"{value:.{digits}f}"


def brief(finding: dict) -> str:
    """A few words and the numbers of one finding: "class loss 2.774 at chance (2.773) after epoch 2"."""
    check, numbers, epoch = finding["check"], finding.get("numbers") or {}, finding.get("epoch")
    if check == "gradient_share":
        ratio = numbers.get("ratio")
        times = f"{ratio:.0f}x" if isinstance(ratio, (int, float)) else "all of"
        return f"{finding.get('term', '?')} gradient {times} the class term's at step {finding.get('step')}"
    if check == "class_loss_at_chance":
        return (
            f"class loss {_number(numbers, 'class_loss')} at chance ({_number(numbers, 'chance_class_loss')}) "
            f"after epoch {epoch}"
        )
    if check == "train_top1_at_chance":
        return f"train top-1 {_number(numbers, 'train_top1', 2)} % at chance after epoch {epoch}"
    if check == "loss_flat":
        return f"loss flat ({100 * numbers.get('relative_spread', 0.0):.3f} %) up to epoch {epoch}"
    if check == "zero_positives":
        return f"no positive box in epoch {epoch}"
    if check == "map_zero":
        return f"mAP 0 at every evaluation up to epoch {epoch}"
    return f"{check} (epoch {epoch})"


def label_suffix(findings: Sequence[dict]) -> str:
    """For a plot label: " ⚠ class_loss_at_chance, ..." (empty without findings)."""
    checks = list(dict.fromkeys(f["check"] for f in findings))
    return f" {MARK} {', '.join(checks)}" if checks else ""


def table_marks(rows: Sequence[Any]) -> tuple[dict[str, str], list[str]]:
    """For a table's condition rows (each with `.name` and `.runs`): ({condition: " ⚠n"}, the notes under it)."""
    marks: dict[str, str] = {}
    notes: list[str] = []
    for row in rows:
        flagged = [(run, run_findings(run)) for run in row.runs]
        flagged = [(run, found) for run, found in flagged if found]
        if not flagged:
            continue
        number = len(notes) + 1
        marks[row.name] = f" {MARK}{number}"
        per_run = "; ".join(f"seed {run.seed}: {', '.join(brief(f) for f in found)}" for run, found in flagged)
        notes.append(
            f"{MARK}{number} **{row.name}**: {len(flagged)} of {len(row.runs)} runs have training-health findings "
            f"({DOC}); their numbers may not measure the method: {per_run}."
        )
    return marks, notes


def runs_column(run: RunResult) -> str:
    """The runs.csv / results.csv cell: the checks a run's findings name, ";"-separated (empty when healthy)."""
    return ";".join(dict.fromkeys(f["check"] for f in run_findings(run)))
