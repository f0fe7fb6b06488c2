"""Command body of tools/health_probe.py: the first steps of a configured run, each loss term's size and gradient
share, before the run is started (makd.engine.health_probe)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import makd.tasks  # noqa: F401  (every task joins makd.engine.tasks.TASKS)
from makd.config import load_cfg
from makd.engine.health_probe import probe_first_steps, probe_table
from makd.errors import ConfigError, run_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="health_probe.py",
        description="Train a config's first steps in memory (no run folder) and print each loss term's size and "
        "gradient norm on the shared layers, per step, with the training-health findings (docs/health.md).",
        epilog="example: python tools/health_probe.py configs/demo/lavid.yaml LaViD.LAMBDA 10 --steps 12",
    )
    parser.add_argument("config", help="YAML config, as for tools/our_train.py")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps to train and measure (default 12)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON instead of a table")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. SOLVER.LR 0.05")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    result = probe_first_steps(load_cfg(args.config, args.opts), args.steps)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(probe_table(result), end="")
    for finding in result["findings"]:
        print(f"finding {finding['check']}: {finding['message']}")
    if not result["findings"]:
        print(f"no finding in {len(result['steps'])} steps ({result['steps_per_epoch']} steps per epoch)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_body, argv)
