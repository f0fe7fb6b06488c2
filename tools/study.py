"""Run a study (conditions x seeds, optional sweep) and write its results table: python tools/study.py STUDY.yaml

    python tools/study.py configs/studies/demo.yaml              # run what is not finished, then results.md/.csv
    python tools/study.py configs/studies/demo.yaml --jobs 2     # two trainings at a time
    python tools/study.py configs/studies/demo.yaml --print-commands > jobs.txt   # one line per unfinished run
    python tools/study.py configs/studies/demo.yaml --run-one makd 1             # one run (what each line does)
    python tools/study.py configs/studies/demo.yaml --no-run     # only the table and plots of finished runs

A killed study continues where it stopped: finished runs (summary.json) are kept, interrupted ones resumed
(--resume of tools/our_train.py). The study file format is described in makd/analysis/study.py and docs/studies.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.analysis.results_table import summarise, write_results  # noqa: E402
from makd.analysis.run_plots import draw_all  # noqa: E402
from makd.analysis.study import (  # noqa: E402
    StudyError,
    execute_runs,
    finished_groups,
    load_study,
    plan,
    plot_seeds,
    print_commands,
    study_lock,
)
from makd.errors import run_command  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="study.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("study", help="study YAML file")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time (default 1)")
    parser.add_argument(
        "--print-commands",
        action="store_true",
        help="print one command per unfinished run (for a SLURM array / job runner) and exit",
    )
    parser.add_argument("--run-one", nargs=2, metavar=("CONDITION", "SEED"), help="train (or resume) one run only")
    parser.add_argument("--no-run", action="store_true", help="train nothing; table and plots of finished runs")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the study's plots")
    parser.add_argument(
        "--plot-seeds",
        metavar="SEEDS",
        help="draw the figures of these seeds (first, all, or e.g. 0,2; default: the study file's plots.seeds)",
    )
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise StudyError(f"--jobs must be >= 1, got {args.jobs}")
    study = load_study(args.study)
    if args.print_commands:
        for line in print_commands(study, args.study):
            print(line)
        return 0
    if args.run_one:
        return _run_one(study, args.run_one[0], args.run_one[1])
    with study_lock(study):  # one invocation at a time writes the study folder (tables, plots, its runs)
        return _run_study(study, args)


def _run_one(study, condition: str, seed: str) -> int:
    """Train (or resume) one run of the study: a job of a job array (no study lock: the run folder has its own)."""
    chosen = [(run, status) for run, status, _ in plan(study) if run.condition == condition and str(run.seed) == seed]
    if not chosen:
        raise StudyError(
            f"--run-one {condition} {seed}: no such run; conditions: {', '.join(study.conditions)}, "
            f"seeds: {', '.join(map(str, study.seeds))}"
        )
    pending = [item for item in chosen if item[1] != "done"]
    _, failed = execute_runs(pending, 1)
    if not pending:
        print(f"[study] {chosen[0][0].label}: already finished")
    if failed:
        run, code = failed[0]
        raise StudyError(f"{run.label} failed with exit code {code}; see {run.log_path}")
    return 0


def _run_study(study, args: argparse.Namespace) -> int:
    """Every unfinished run, then the table and the plots (with the study folder's lock held)."""
    planned = plan(study)
    start = time.perf_counter()
    counts = {s: sum(1 for _, status, _ in planned if status == s) for s in ("done", "resume", "todo")}
    print(
        f"[study] {study.name}: {len(planned)} runs ({len(study.conditions)} conditions x {len(study.seeds)} seeds) "
        f"in {study.output}: {counts['done']} finished, {counts['resume']} to resume, {counts['todo']} to start"
    )
    failed = []
    if not args.no_run:
        pending = [(run, status) for run, status, _ in planned if status != "done"]
        _, failed = execute_runs(pending, args.jobs)
    groups = finished_groups(study)
    missing = [run.label for run, _, _ in planned if not (run.run_dir / "summary.json").exists()]
    notes = [
        f"Study file {study.source}; base config {study.base}; run folders under {study.output}; "
        f"this invocation trained for {time.perf_counter() - start:.0f} s (wall)."
    ]
    if missing:
        notes.append(f"Not finished ({len(missing)}): {', '.join(missing)}.")
    if groups:
        reference = study.reference if study.reference in groups else next(iter(groups))
        rows, reference = summarise(groups, reference)
        markdown = write_results(study.output, rows, reference, title=f"Study {study.name}", notes=notes)
        print(markdown)
        print(f"[study] wrote {study.output / 'results.md'}, results.csv, runs.csv")
    if groups and study.plots and not args.no_plots:
        _draw(study, groups, args.plot_seeds)
    if failed:
        raise StudyError(
            f"{len(failed)} run(s) failed: {', '.join(run.label for run, _ in failed)}; see their "
            "<run>.log files next to the run folders; run the study again to retry them"
        )
    return 0


def _draw(study, groups, seeds_asked: str | None = None) -> None:
    """The study's figures for each seed of plots.seeds (or --plot-seeds), each seed into plots/seed<N>/ with the
    seed in every label: curves of every condition, t-SNE and aspect plots of the chosen ones."""
    asked = study.plots.get("seeds", "first") if seeds_asked is None else _seeds_option(seeds_asked)
    for seed in plot_seeds(asked, study.seeds, "plots.seeds" if seeds_asked is None else "--plot-seeds"):
        _draw_seed(study, groups, seed)


def _seeds_option(text: str):
    """--plot-seeds first | all | 0,2."""
    if text in ("first", "all"):
        return text
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise StudyError(f"--plot-seeds {text!r}: use first, all or seeds such as 0,2") from None


def _draw_seed(study, groups, seed: int) -> None:
    names = [name for name, runs in groups.items() if any(r.seed == seed for r in runs)]
    if not names:
        print(f"[study] seed {seed}: no finished run; no plots")
        return
    run_dirs = [next(r.path for r in groups[name] if r.seed == seed) for name in names]
    what = [w for w in ("curves", "tsne", "aspects") if study.plots.get(w)]
    tsne = [names.index(n) for n in study.plots.get("tsne") or [] if n in names] or None
    if "tsne" in what and tsne is not None and len(tsne) < len(study.plots["tsne"]):
        what.remove("tsne")
        print(f"[study] seed {seed}: t-SNE skipped: a chosen condition has no finished run")
    aspect = study.plots.get("aspects")
    if "aspects" in what and aspect not in names:
        what.remove("aspects")
    if any(run.task != "classification" for runs in groups.values() for run in runs):
        dropped = [w for w in ("tsne", "aspects") if w in what]
        what = [w for w in what if w not in dropped]
        if dropped:
            print(f"[study] {' and '.join(dropped)} plots skipped: they are drawn for classification runs only")
    out = study.output / "plots" / f"seed{seed}"
    print(f"[study] plots of seed {seed} in {out}")
    draw_all(
        run_dirs,
        [f"{name} (seed {seed})" for name in names],
        out,
        what,
        tsne,
        names.index(aspect) if isinstance(aspect, str) and aspect in names else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_body, argv, resume_hint="run the same command again to continue the study")


if __name__ == "__main__":
    sys.exit(main())
