"""Command bodies of tools/our_train.py (train) and tools/eval.py (evaluate a saved student)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from makd.artifacts import ArtifactError
from makd.config import ConfigError, load_cfg
from makd.engine.trainer import NonFiniteLossError, evaluate_checkpoint, train

USER_ERRORS = (ConfigError, ArtifactError, FileNotFoundError, FileExistsError, NonFiniteLossError, ValueError, KeyError)


def run_command(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a command body; an expected user error becomes one line on stderr and exit code 2."""
    try:
        return body(argv)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="our_train.py",
        description="Train a student with MaKD (or the CE baseline) from a YAML config.",
        epilog="example: python tools/our_train.py configs/demo/makd.yaml SOLVER.EPOCHS 10",
    )
    parser.add_argument("config", nargs="?", help="YAML config (deltas over makd/config/defaults.py)")
    parser.add_argument("--cfg", dest="cfg_flag", metavar="CONFIG", help="the config, as a flag (same as positional)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's latest.pth")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run in the run folder first")
    parser.add_argument(
        "--stop-after-epoch",
        type=int,
        metavar="N",
        help="stop cleanly after epoch N (e.g. a job's time limit); continue later with --resume",
    )
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. SOLVER.LR 0.05")
    return parser


def _train_body(argv: Sequence[str] | None) -> int:
    args = _train_parser().parse_intermixed_args(argv)
    config, opts = args.config, list(args.opts)
    if args.cfg_flag:
        if config:  # with --cfg, the first bare word is an override key, not the config
            opts.insert(0, config)
        config = args.cfg_flag
    if not config:
        raise ConfigError("no config given; usage: python tools/our_train.py CONFIG.yaml [KEY VALUE ...]")
    cfg = load_cfg(config, opts)
    train(cfg, resume=args.resume, overwrite=args.overwrite, stop_after_epoch=args.stop_after_epoch)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    return run_command(_train_body, argv)


def _eval_body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="eval.py", description="Score a saved student on the config's data.")
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="best.pth / latest.pth / student.pth of a run")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides")
    args = parser.parse_intermixed_args(argv)
    result = evaluate_checkpoint(args.config, args.checkpoint, args.opts, args.split)
    print(json.dumps(result, indent=2))
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    return run_command(_eval_body, argv)
