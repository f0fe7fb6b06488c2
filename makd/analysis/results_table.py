"""The results table of a study or a set of run folders: results.md and results.csv.

Per condition: n, mean ± sd over seeds of the last-epoch and the selected-epoch ("best") test metric (top-1 for
classification, COCO mAP for detection; one table holds one task), and the paired difference to a reference
condition (same seeds) with a 95 % t interval. With `paper`, the published figures of the matching dataset x
student sit beside the rows.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from makd.analysis.published import PublishedFigure, no_match_reason, published_for
from makd.analysis.run_folders import Metric, RunResult
from makd.analysis.run_health import runs_column, table_marks
from makd.analysis.statistics import (
    CONFIDENCE,
    MIN_SEEDS_FOR_INTERVAL,
    MeanSd,
    PairedDifference,
    mean_sd,
    paired_difference,
)
from makd.analysis.teacher_cost import NO_TEACHER, TeacherCost, condition_cost, cost_columns, format_cost, teacher_cost
from makd.atomic_files import atomic_write_text
from makd.errors import MakdError


class TableError(MakdError):
    """A table cannot be built (no finished run, an unknown reference condition)."""


@dataclass
class ConditionRow:
    name: str
    runs: list[RunResult]
    last: MeanSd
    best: MeanSd
    best_selected_on: str  # "val", "test" or "mixed"
    diff_last: PairedDifference | None  # None on the reference row itself
    diff_best: PairedDifference | None
    dataset: str | None = None
    student: str = ""
    published: list[PublishedFigure] = field(default_factory=list)
    teacher: TeacherCost = field(default_factory=lambda: TeacherCost(None, NO_TEACHER))  # what labelling cost
    metric: Metric | None = None  # the runs' test metric (None only for rows built by hand)
    paper_note: str = ""  # with --paper, why no published figure sits beside the row ("" when some does)

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


def summarise(
    groups: Mapping[str, Sequence[RunResult]], reference: str | None = None, paper: bool = False
) -> tuple[list[ConditionRow], str]:
    """Rows in the groups' order and the reference's name (default: the first group)."""
    if not groups:
        raise TableError("no finished runs to summarise")
    reference = reference if reference is not None else next(iter(groups))
    if reference not in groups:
        raise TableError(f"reference condition {reference!r} has no finished run; choose one of {', '.join(groups)}")
    tasks = {run.task: str(run.path) for runs in groups.values() for run in runs}
    if len(tasks) > 1:
        raise TableError(
            "one table holds one task, but these runs mix " + " and ".join(f"{t} ({p})" for t, p in tasks.items())
            + "; report each task's runs separately"
        )  # fmt: skip
    ref_last = {run.seed: run.last for run in groups[reference]}
    ref_best = {run.seed: run.best for run in groups[reference]}
    rows = []
    for name, runs in groups.items():
        selected = {run.best_selected_on for run in runs}
        row = ConditionRow(
            name=name,
            runs=list(runs),
            last=mean_sd([run.last for run in runs]),
            best=mean_sd([run.best for run in runs]),
            best_selected_on=selected.pop() if len(selected) == 1 else "mixed",
            diff_last=None if name == reference else paired_difference({r.seed: r.last for r in runs}, ref_last),
            diff_best=None if name == reference else paired_difference({r.seed: r.best for r in runs}, ref_best),
            teacher=condition_cost(runs),
            metric=runs[0].metric,
        )
        if paper and row.metric.key == "top1":  # the published tables are classification top-1
            row.dataset, row.student, row.published = published_for(runs[0].config)
            if not row.published:
                row.paper_note = no_match_reason(row.dataset, row.student)
        elif paper:
            row.paper_note = f"the published tables are classification top-1, these are {runs[0].task} runs"
        rows.append(row)
    return rows, reference


def _pm(value: MeanSd) -> str:
    if value.n == 0:
        return "-"
    return f"{value.mean:.2f}" if math.isnan(value.sd) else f"{value.mean:.2f} ± {value.sd:.2f}"


def _diff(value: PairedDifference | None) -> str:
    if value is None:
        return "(reference)"
    if value.n == 0:
        return "- (no shared seed)"
    if not value.has_interval:  # statistics.paired_difference says why; a collapsed or 12.7-t interval misleads
        return f"{value.mean:+.2f} ({value.no_interval})"
    return f"{value.mean:+.2f} [{value.low:+.2f}, {value.high:+.2f}]"


def _metric_label(rows: Sequence[ConditionRow]) -> str:
    """ "test top-1 (%)" or "test COCO mAP (%)" without the unit, as the table's columns name it."""
    metric = next((row.metric for row in rows if row.metric is not None), None)
    return (metric.label if metric is not None else "test top-1 (%)").removesuffix(" (%)")


def _best_label(rows: Sequence[ConditionRow]) -> str:
    label = _metric_label(rows)
    selected = {row.best_selected_on for row in rows}
    if selected == {"val"}:
        return f"{label} at best val epoch"
    if selected == {"test"}:
        return f"best {label} (chosen on test)"
    return f"{label} at best epoch (val where present, else test)"


def format_markdown(
    rows: Sequence[ConditionRow], reference: str, title: str = "Results", notes: Sequence[str] = ()
) -> str:
    best = _best_label(rows)
    label = _metric_label(rows)
    level = int(CONFIDENCE * 100)
    lines = [
        f"# {title}",
        "",
        f"{label[0].upper()}{label[1:]} (%), mean ± sd over seeds; Δ = paired difference to **{reference}** over "
        "the seeds both have, "
        f"with its {level} % t confidence interval. Teacher cost: what labelling the training targets cost "
        "(prompts scored, tokens processed, seconds), from the sidecar of the target file each run names; "
        f"{NO_TEACHER} = no teacher.",
        "",
        f"| condition | n | seeds | {label} last | {best} | Δ last vs {reference} [{level} % CI] "
        f"| Δ best vs {reference} [{level} % CI] | teacher cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    health_marks, health_notes = table_marks(rows)  # a number from a run with training-health findings is marked
    for row in rows:
        last, best = (_pm(value) + health_marks.get(row.name, "") for value in (row.last, row.best))
        lines.append(
            f"| {row.name} | {row.last.n} | {','.join(map(str, row.seeds))} | {last} | {best} "
            f"| {_diff(row.diff_last)} | {_diff(row.diff_best)} | {format_cost(row.teacher)} |"
        )
    if any(row.best_selected_on != "val" for row in rows):
        lines += [
            "",
            'Without a validation split (DATASET.VAL_FRACTION 0) "best" is the best test epoch, as the '
            "official code reported: optimistic; prefer the last-epoch column or a validation split for claims.",
        ]
    for note in health_notes:
        lines += ["", note]
    published = [row for row in rows if row.published]
    if published:
        lines += _published_markdown(published)
    lines += paper_notes(rows)
    if any(d is not None and d.n and not d.has_interval for row in rows for d in (row.diff_last, row.diff_best)):
        lines += [
            "",
            f"Δ without an interval: an interval is given from {MIN_SEEDS_FOR_INTERVAL} or more paired seeds whose "
            "differences vary; from fewer the t quantile (12.7 at 2 seeds) makes it meaningless, and differences of "
            "zero spread (a metric in fixed steps, e.g. 0.5 points on 200 test images) would print a certainty the "
            "seeds do not give. Run more seeds for a claim.",
        ]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def paper_notes(rows: Sequence[ConditionRow]) -> list[str]:
    """With --paper, a line for the rows no published figure matches, saying why (once when they share the reason)."""
    unmatched = [row for row in rows if row.paper_note]
    if not unmatched:
        return []
    reasons = {row.paper_note for row in unmatched}
    if len(reasons) == 1 and len(unmatched) == len(rows):
        return ["", f"--paper: no published numbers match these runs: {reasons.pop()}."]
    return ["", *(f"--paper: no published numbers for {row.name}: {row.paper_note}." for row in unmatched)]


def _published_markdown(rows: Sequence[ConditionRow]) -> list[str]:
    lines = [
        "",
        "## Published numbers beside ours",
        "",
        "| condition | dataset | student | ours: last | ours: best | published (top-1 %) |",
        "|---|---|---|---|---|---|",
    ]
    sources: dict[str, PublishedFigure] = {}
    for row in rows:
        figures = "; ".join(f"{f.source}: {f.method_label} {f.top1:.2f}" for f in row.published)
        lines.append(f"| {row.name} | {row.dataset} | {row.student} | {_pm(row.last)} | {_pm(row.best)} | {figures} |")
        for figure in row.published:
            sources.setdefault(figure.source, figure)
    lines.append("")
    lines += [f"- {key}: {f.citation}; {f.table}." for key, f in sources.items()]
    return lines


CSV_COLUMNS = (
    "condition",
    "n",
    "seeds",
    "last_mean",
    "last_sd",
    "best_mean",
    "best_sd",
    "best_selected_on",
    "reference",
    "diff_last_mean",
    "diff_last_ci_low",
    "diff_last_ci_high",
    "diff_best_mean",
    "diff_best_ci_low",
    "diff_best_ci_high",
    "n_paired",
    "dataset",
    "student",
    "published",
    "teacher_prompts_scored",
    "teacher_prompt_tokens",
    "teacher_tokens_processed",
    "teacher_seconds",
    "teacher_cost_note",
    "diff_no_interval",  # why diff_*_ci_low/high are empty (statistics.paired_difference), "" when they are given
    "health_findings",  # per run with training-health findings: "seed: check;check" (makd/analysis/run_health.py)
)


def format_csv(rows: Sequence[ConditionRow], reference: str) -> str:
    def number(value: float) -> str:
        return "" if value is None or math.isnan(value) else f"{value:.4f}"

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        diff_last = row.diff_last or PairedDifference(math.nan, math.nan, math.nan, row.last.n)
        diff_best = row.diff_best or PairedDifference(math.nan, math.nan, math.nan, row.last.n)
        writer.writerow(
            [
                row.name,
                row.last.n,
                " ".join(map(str, row.seeds)),
                number(row.last.mean),
                number(row.last.sd),
                number(row.best.mean),
                number(row.best.sd),
                row.best_selected_on,
                reference,
                number(diff_last.mean),
                number(diff_last.low),
                number(diff_last.high),
                number(diff_best.mean),
                number(diff_best.low),
                number(diff_best.high),
                diff_last.n,
                row.dataset or "",
                row.student,
                "; ".join(f"{f.source}:{f.method}={f.top1}" for f in row.published),
                *cost_columns(row.teacher),
                "; ".join(dict.fromkeys(d.no_interval for d in (row.diff_last, row.diff_best) if d and d.no_interval)),
                " ".join(f"{run.seed}:{runs_column(run)}" for run in row.runs if runs_column(run)),
            ]
        )
    return out.getvalue()


def format_runs_csv(rows: Sequence[ConditionRow]) -> str:
    """One line per run: condition, seed, last / best test metric (top-1 or mAP), best epoch, folder."""
    key = next((row.metric.key for row in rows if row.metric is not None), "top1")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        (
            "condition",
            "seed",
            f"test_{key}_last",
            f"test_{key}_best_selected",
            "best_selected_on",
            "best_epoch",
            "train_seconds",
            "run_dir",
            "teacher_cost",
            "health_findings",
        )
    )
    for row in rows:
        for run in row.runs:
            writer.writerow(
                [
                    row.name,
                    run.seed,
                    f"{run.last:.4f}",
                    f"{run.best:.4f}",
                    run.best_selected_on,
                    run.summary.get("best_epoch", ""),
                    f"{run.summary.get('train_seconds', 0.0):.1f}",
                    str(run.path),
                    format_cost(teacher_cost(run)),
                    runs_column(run),
                ]
            )
    return out.getvalue()


def write_results(
    out_dir: str | os.PathLike,
    rows: Sequence[ConditionRow],
    reference: str,
    title: str = "Results",
    notes: Sequence[str] = (),
) -> str:
    """Write results.md, results.csv and runs.csv into `out_dir` (atomically); returns the Markdown."""
    markdown = format_markdown(rows, reference, title, notes)
    atomic_write_text(os.path.join(out_dir, "results.md"), markdown)
    atomic_write_text(os.path.join(out_dir, "results.csv"), format_csv(rows, reference))
    atomic_write_text(os.path.join(out_dir, "runs.csv"), format_runs_csv(rows))
    return markdown
