"""Command bodies of tools/our_train.py (train) and tools/eval.py (evaluate a saved student)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import makd.tasks  # noqa: F401  (every task joins makd.engine.tasks.TASKS)
from makd.analysis.aspect_metrics import json_safe
from makd.analysis.class_accuracy import per_class, table_lines, write_class_accuracy
from makd.atomic_files import OutputLocationError
from makd.config import load_cfg
from makd.engine.distributed import LAUNCHED_PROCESSES, launch
from makd.engine.run_folder import CONFIG as RUN_CONFIG
from makd.engine.run_folder import LATEST
from makd.engine.trainer import evaluate_checkpoint, run_dir_of, train
from makd.errors import ConfigError, MakdError, run_command


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="our_train.py",
        description="Train a student with MaKD (or the CE baseline) from a YAML config.",
        epilog="example: python tools/our_train.py configs/demo/makd.yaml SOLVER.EPOCHS 10",
    )
    parser.add_argument("config", nargs="?", help="YAML config (deltas over makd/config/defaults.py)")
    parser.add_argument("--cfg", dest="cfg_flag", metavar="CONFIG", help="the config, as a flag (same as positional)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's latest.pth")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in the run folder (only its own files, once the new run's checks passed)",
    )
    parser.add_argument(
        "--stop-after-epoch",
        type=int,
        metavar="N",
        help="stop cleanly after epoch N (e.g. a job's time limit); continue later with --resume",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="train on N processes of this machine (DDP with torchrun's launcher, run by this command: a user error is "
        "one line, without torchrun's traceback); `torchrun --nproc_per_node N tools/our_train.py` works too",
    )
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. SOLVER.LR 0.05")
    return parser


def _config_and_opts(args: argparse.Namespace) -> tuple[str, list[str]]:
    config, opts = args.config, list(args.opts)
    if args.cfg_flag:
        if config:  # with --cfg, the first bare word is an override key, not the config
            opts.insert(0, config)
        config = args.cfg_flag
    if not config:
        raise ConfigError("no config given; usage: python tools/our_train.py CONFIG.yaml [KEY VALUE ...]")
    return config, opts


def _train_body(argv: Sequence[str] | None) -> int:
    args = _train_parser().parse_intermixed_args(argv)
    if args.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node {args.nproc_per_node}: must be >= 1")
    if args.nproc_per_node > 1 and "RANK" not in os.environ:
        load_cfg(*_config_and_opts(args))  # a config mistake is one line here, before any process starts
        return launch(_program(), _without_nproc(list(sys.argv[1:] if argv is None else argv)), args.nproc_per_node)
    cfg = load_cfg(*_config_and_opts(args))
    train(cfg, resume=args.resume, overwrite=args.overwrite, stop_after_epoch=args.stop_after_epoch)
    return 0


def _program() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "tools/our_train.py"


def _without_nproc(args: list[str]) -> list[str]:
    """`args` without --nproc-per-node and its value (the launched processes must not launch again)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            out.append(arg)
    return out


def _launcher(program: str) -> list[str]:
    """How the command was started: python, this command's --nproc-per-node, or torchrun (a resume needs as many
    processes as the run had: makd.engine.run_inputs)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return ["python", program]
    if os.environ.get(LAUNCHED_PROCESSES):
        return ["python", program, "--nproc-per-node", os.environ[LAUNCHED_PROCESSES]]
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
    nodes = [] if per_node == world else ["--nnodes", str(world // per_node)]
    return ["torchrun", *nodes, "--nproc_per_node", str(per_node), program]


def resume_hint(argv: Sequence[str] | None) -> str:
    """After Ctrl-C, SIGTERM or a failed write: the exact command that continues the run (or reruns it when no epoch
    had finished), launched as this one was."""
    args = _without_nproc(list(sys.argv[1:] if argv is None else argv))
    program = _program()
    launcher = _launcher(program)
    try:
        cfg = load_cfg(*_config_and_opts(_train_parser().parse_intermixed_args(args)))
        has_checkpoint = (run_dir_of(cfg) / LATEST).is_file()
    except (MakdError, SystemExit):  # cannot tell: suggest resuming, which says so if there is nothing yet
        has_checkpoint = True
    if not has_checkpoint:
        return f"no epoch had finished; start again with: {shlex.join([*launcher, *args])}"
    args = [a for a in args if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return f"continue with: {shlex.join([*launcher, *args])}"


def train_main(argv: Sequence[str] | None = None) -> int:
    return run_command(_train_body, argv, resume_hint)


def default_eval_dir(checkpoint: str) -> Path:
    """<run folder>_eval beside the run folder holding the checkpoint: never inside it, since a run folder holds only
    what the trainer writes (a foreign file would stop its --resume); a checkpoint elsewhere: its own folder."""
    folder = Path(checkpoint).resolve().parent
    return folder.with_name(f"{folder.name}_eval") if (folder / RUN_CONFIG).is_file() else folder


def _check_writable(folder: Path) -> None:
    """Before the images are scored: `folder` can be created and written (nothing is created yet, so a refused
    config leaves no empty folder behind)."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputLocationError(f"--out {folder} cannot be written ({existing} is not a writable folder)")


def _eval_body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="eval.py",
        description="Score a saved student on the config's data: top-1 / top-5, per-class accuracy, the confusion "
        "matrix (CSV + figure).",
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="best.pth / latest.pth / student.pth of a run")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument(
        "--out",
        help="folder for <checkpoint>_<split>_confusion.csv/.png and _per_class.csv "
        "(default: <run folder>_eval beside the run folder)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON (per class and matrix included)")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides")
    args = parser.parse_intermixed_args(argv)
    out = Path(args.out) if args.out else default_eval_dir(args.checkpoint)
    prefix = f"{Path(args.checkpoint).stem}_{args.split}"
    _check_writable(out)
    result = evaluate_checkpoint(args.config, args.checkpoint, args.opts, args.split)
    names, confusion = result["class_names"], np.asarray(result.pop("confusion"))
    title = (
        f"{Path(args.checkpoint).resolve().parent.name}/{Path(args.checkpoint).name} on {args.split}: top-1 "
        f"{result['top1']:.2f} % of {result['num_samples']} images"
    )
    paths = write_class_accuracy(out, prefix, confusion, names, title)
    result["per_class"] = [
        {"class": r.name, "images": r.images, "correct": r.correct, "top1": r.top1, "most_often_taken_for":
         r.confused_with or None} for r in per_class(confusion, names)
    ]  # fmt: skip
    result["confusion"] = confusion.tolist()  # row = true class, column = predicted, in class_names order
    result["files"] = [str(p) for p in paths]
    if args.json:
        print(json.dumps(json_safe(result), indent=2))
        return 0
    print(
        f"{args.checkpoint} on {args.split}: top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} %, "
        f"loss {result['loss']:.4f} ({result['num_samples']} images, {len(names)} classes)"
    )
    if "aspect_mae" in result:
        print(f"aspect head vs the teacher: MAE {result['aspect_mae']:.4f}, AUC {result['aspect_auc']:.4f} "
              f"(over {result['aspect_auc_questions']} questions with enough answers)")  # fmt: skip
    print("\n".join(table_lines(confusion, names)))
    print(f"wrote {paths[2]}, {paths[0].name}, {paths[1].name}")
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    return run_command(_eval_body, argv)
