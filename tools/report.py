"""The results table of existing run folders: python tools/report.py RUN_DIR_OR_FOLDER... [--paper] [--out DIR]

Runs that differ only in SEED (and OUTPUT_DIR / EXPERIMENT.NAME) are seeds of one condition; the table gives
each condition's mean ± sd of the last and the selected ("best") test top-1 (COCO mAP for detection runs; one
table holds one task) and the paired difference to a reference condition with a 95 % t interval. --paper adds the
published numbers of the matching dataset x student (makd/analysis/published_results.yaml: the MaKD paper's and
LaViD's tables).

    python tools/report.py output/demo/*/                      # the demo's runs
    python tools/report.py output/oxford_pets --paper --reference oxford_pets_resnet18_baseline --out output/oxford_pets

Without --out nothing is written (the table goes to stdout). An --out inside a run folder is recorded in its
manifest.json as written by tools/report.py (while the run's lock is held), so a later `our_train.py --overwrite`
of that run removes the tables with it and never mistakes them for the user's files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.analysis.results_table import (  # noqa: E402
    format_csv,
    format_markdown,
    paper_notes,
    summarise,
    write_results,
)
from makd.analysis.run_folders import (  # noqa: E402
    SEED_ONLY_KEYS,
    RunFolderError,
    find_run_dirs,
    group_by_condition,
    read_run,
)
from makd.engine.run_folder import recording_into_run_folder  # noqa: E402
from makd.errors import run_command  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="report.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("runs", nargs="+", help="run folders, or folders searched for run folders")
    parser.add_argument("--reference", help="condition the differences are taken against (default: the first)")
    parser.add_argument("--paper", action="store_true", help="put the published numbers beside matching rows")
    parser.add_argument(
        "--out", help="write results.md, results.csv and runs.csv into this folder (default: print only)"
    )
    parser.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="also treat this config key as not defining a condition (repeatable)",
    )
    parser.add_argument(
        "--skip-unfinished", action="store_true", help="leave out run folders without summary.json instead of stopping"
    )
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    runs, skipped = [], []
    for run_dir in find_run_dirs(args.runs):
        try:
            runs.append(read_run(run_dir))
        except RunFolderError:
            if not args.skip_unfinished:
                raise
            skipped.append(str(run_dir))
    if not runs:
        raise RunFolderError(f"no finished run folder in {' '.join(args.runs)}")
    groups = group_by_condition(runs, SEED_ONLY_KEYS + tuple(args.ignore))
    rows, reference = summarise(groups, args.reference, paper=args.paper)
    notes = [f"Skipped unfinished: {', '.join(skipped)}."] if skipped else []
    if args.out:
        with recording_into_run_folder(args.out, "tools/report.py"):
            text = write_results(args.out, rows, reference, title="Report", notes=notes)
        print(f"[report] wrote {Path(args.out) / 'results.md'}, results.csv, runs.csv", file=sys.stderr)
    else:
        text = format_markdown(rows, reference, title="Report", notes=notes)
    print(format_csv(rows, reference) if args.csv else text, end="")
    if args.csv:  # the table says it under itself; CSV has no room for it
        for note in filter(None, paper_notes(rows)):
            print(note, file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_body, argv)


if __name__ == "__main__":
    sys.exit(main())
