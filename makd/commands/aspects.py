"""`python tools/aspects.py {inspect,convert,audit,compare}`: look into, convert, check and compare aspect files.

inspect FILE                       rows, Q, histogram, quantisation, duplicates, bad values, per-question rates
convert SRC --out OUT [--images DIR | --config CFG] [--level auto|image|class] [--class-map FILE] [--drop-unmatched]
                                   another project's file -> {image_id: [p_1..p_Q]} + sidecar
audit FILE --truth TRUTH.json      per-question agreement / AUC against 0/1 ground truth
audit FILE --cub-attributes image_attribute_labels.txt --cub-images images.txt --question-map MAP
compare FIRST SECOND               per-question |dP|, correlation and agreement over the rows both files hold
See docs/aspect_files.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from makd.analysis.aspect_inspection import inspect_file
from makd.atomic_files import check_output_location
from makd.data.labelled_images import config_images, folder_images
from makd.errors import run_command
from makd.formats.aspect_files import read_aspect_file
from makd.formats.conversion import DUPLICATE_POLICIES, LEVELS, convert, read_class_map, write_conversion
from makd.formats.errors import ArtifactError
from makd.formats.tolerant_reader import read_raw

PROG = "aspects.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Inspect, convert, audit and compare aspect files.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="summarise an aspect file and list its problems (never stops at the first)")
    p.add_argument("file", help="aspect file: JSON object or JSON lines")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("convert", help="map another project's aspect file to this project's image ids")
    p.add_argument("source", help="JSON object or JSON-lines file keyed by image paths or class names")
    p.add_argument("--out", required=True, help="aspect file to write ({image_id: [p_1..p_Q]}, plus .meta.json)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--images", help="image folder whose ids (and classes) the keys are matched to")
    where.add_argument(
        "--config",
        help="training config: match against its images as stage 3 lists them (any DATASET.TYPE, split files included)",
    )
    p.add_argument("--split", choices=("train", "test"), default="train", help="with --config: which split")
    p.add_argument(
        "--level",
        choices=LEVELS,
        default="auto",
        help="image: keys are images; class: keys are class names spread to their images; "
        "auto (default): class when every folder class has a key of its name",
    )
    p.add_argument(
        "--class-map",
        help="JSON {folder class: name in the file} or `folder class<TAB>name` lines, for names the rules do not pair",
    )
    p.add_argument(
        "--on-duplicate",
        choices=DUPLICATE_POLICIES,
        default="error",
        help="a key repeated with different values: error (default), keep the first or the last",
    )
    p.add_argument(
        "--drop-unmatched", action="store_true", help="leave out keys that match no image of --images (default: refuse)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")

    p = sub.add_parser("audit", help="score the teacher's answers against ground-truth 0/1 attributes")
    p.add_argument("file", help="aspect file in this project's ids (convert others first)")
    p.add_argument("--truth", help="truth file {image_id: [0/1 ...]} with the same Q (the demo's truth_*.json)")
    p.add_argument("--cub-attributes", help="CUB-200-2011 attributes/image_attribute_labels.txt")
    p.add_argument("--cub-images", help="CUB-200-2011 images.txt (image_id -> path, for the ids)")
    p.add_argument("--question-map", help="lines `<question number> <CUB attribute id>`")
    p.add_argument(
        "--keep-not-visible",
        action="store_true",
        help="count CUB answers with certainty 1 (not visible) as absent instead of skipping them",
    )
    p.add_argument(
        "--min-auc-count",
        type=int,
        default=None,
        help="a question's AUC needs at least this many true and this many false answers (default 10); "
        "questions below it are listed with their counts and left out of the mean AUC",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("compare", help="how far apart two aspect files of the same images and questions are")
    p.add_argument("first", help="aspect file, e.g. stage 2 in process")
    p.add_argument("second", help="aspect file, e.g. the same images through --backend openai")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _inspect(args: argparse.Namespace) -> int:
    report = inspect_file(read_raw(args.file))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


def _convert(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ArtifactError(f"--out {out} already exists; pass --overwrite to replace it")
    check_output_location(out, "--out")
    raw = read_raw(args.source)
    if args.config:
        images = config_images(args.config, args.split)
    else:
        images = folder_images(args.images) if args.images else None
    class_map = read_class_map(args.class_map) if args.class_map else None
    result = convert(raw, images, args.level, class_map, args.on_duplicate, args.drop_unmatched)
    write_conversion(out, raw, result, command=shlex.join([PROG, *argv]))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    width = len(next(iter(result.rows.values())))
    print(f"wrote {out}: {len(result.rows)} rows x {width} aspects ({result.level} level from {raw.path})")
    return 0


def _audit(args: argparse.Namespace) -> int:
    # Imported here: the AUC lives with the training metrics, which import torch (4 s) that inspect/convert skip.
    from makd.analysis.aspect_audit import audit, audit_lines, read_cub_truth, read_question_map, read_truth_file
    from makd.analysis.aspect_metrics import json_safe
    from makd.engine.metrics import MIN_AUC_COUNT

    min_count = MIN_AUC_COUNT if args.min_auc_count is None else args.min_auc_count
    if min_count < 1:
        raise ArtifactError(f"--min-auc-count {min_count}: must be >= 1")

    table = read_aspect_file(args.file)
    cub = (args.cub_attributes, args.cub_images, args.question_map)
    if bool(args.truth) == any(cub):
        raise ArtifactError("give either --truth or --cub-attributes with --cub-images and --question-map")
    if args.truth:
        truth = read_truth_file(args.truth)
    else:
        if not all(cub):
            raise ArtifactError("--cub-attributes needs --cub-images and --question-map as well")
        truth = read_cub_truth(
            args.cub_attributes,
            args.cub_images,
            read_question_map(args.question_map),
            table.num_aspects,
            args.keep_not_visible,
        )
    result = audit(table, truth, min_count)
    print(json.dumps(json_safe(result), indent=2) if args.json else "\n".join(audit_lines(result)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from makd.analysis.aspect_comparison import compare_lines, compare_tables

    result = compare_tables(read_aspect_file(args.first), read_aspect_file(args.second))
    print(json.dumps(result, indent=2) if args.json else "\n".join(compare_lines(result)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; 0 on success, 2 on bad input (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def body(_argv) -> int:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "convert":
            return _convert(args, argv)
        if args.command == "compare":
            return _compare(args)
        return _audit(args)

    return run_command(body, argv)
