"""Figures of run folders: python tools/plot.py RUN_DIR... [--out DIR] [--what curves,tsne,aspects]

    python tools/plot.py output/demo/baseline/seed0 output/demo/makd/seed0 --out output/demo/plots
    python tools/plot.py output/demo/makd/seed0 --what aspects        # heatmaps + per-question agreement of one run

The figures go to a folder of their own: by default <first run folder>.plots, next to it
(output/demo/makd/seed0.plots), never into a run folder, which a later `our_train.py --overwrite` replaces. An --out
inside a run folder is allowed: the figures are then recorded in its manifest.json as written by tools/plot.py (while
the run's lock is held, so not while it trains), and --overwrite removes them with the run.

curves: loss terms, top-1 (train/val/test) and lr of every run (metrics.jsonl); tsne: penultimate features of the
test split of two runs side by side (student.pth, a forward hook on the classifier); aspects: the questions'
correlation and per-class mean-answer heatmaps of the run's training aspect file, and per-question teacher-vs-student
agreement bars (aspect_metrics.json, computed from student.pth when missing). Each PNG has its numbers beside it.
A run still training (or stopped) gets its curves so far and the teacher's heatmaps; a run without an aspect head
(the CE baseline) the teacher's heatmaps of the aspect file its config names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.analysis.run_folders import RunFolderError  # noqa: E402
from makd.analysis.run_plots import draw_all  # noqa: E402
from makd.engine.run_folder import recording_into_run_folder  # noqa: E402
from makd.errors import run_command  # noqa: E402

KINDS = ("curves", "tsne", "aspects")
WRITER = "tools/plot.py"
PLOTS_SUFFIX = ".plots"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument(
        "--out", help="output folder (default: <first run folder>.plots beside it; inside a run folder: recorded in it)"
    )
    parser.add_argument("--what", default=",".join(KINDS), help=f"comma-separated figures out of {','.join(KINDS)}")
    parser.add_argument("--labels", help="comma-separated run labels (default: the folder names)")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    run_dirs = [Path(p) for p in args.runs]
    for run_dir in run_dirs:
        if not (run_dir / "config.yaml").exists():
            raise RunFolderError(f"{run_dir} is not a run folder (no config.yaml)")
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = [w for w in what if w not in KINDS]
    if unknown:
        raise RunFolderError(f"--what {','.join(unknown)} is unknown; use some of {','.join(KINDS)}")
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else [_label(d) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise RunFolderError(f"--labels gives {len(labels)} labels for {len(run_dirs)} runs")
    out = Path(args.out) if args.out else default_out(run_dirs[0])
    with recording_into_run_folder(out, WRITER):
        draw_all(run_dirs, labels, out, what)
    return 0


def default_out(run_dir: Path) -> Path:
    """<run folder>.plots next to the run folder: a folder of the plots' own (docs/studies.md)."""
    resolved = run_dir.resolve()
    return resolved.parent / f"{resolved.name}{PLOTS_SUFFIX}"


def _label(run_dir: Path) -> str:
    name = run_dir.resolve().name
    return f"{run_dir.resolve().parent.name}/{name}" if name.startswith("seed") else name


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_body, argv)


if __name__ == "__main__":
    sys.exit(main())
