"""Read finished run folders (summary.json + config.yaml) and group the runs that differ only in their seed."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from makd.config.defaults import flatten_tree
from makd.errors import MakdError
from makd.formats.strict_json import loads_json
from makd.formats.strict_yaml import load_yaml

# Keys that name or place a run without changing what it trains: runs differing only here are seeds of one condition.
SEED_ONLY_KEYS = ("SEED", "OUTPUT_DIR", "EXPERIMENT.NAME")


class RunFolderError(MakdError):
    """A run folder is missing, unfinished or unreadable."""


@dataclass(frozen=True)
class Metric:
    """The test metric a task's summary.json reports as test_<key>_last / _best / _at_best_val."""

    key: str
    label: str  # as a table names it


# summary.json "task" (absent = classification, as every summary before detection) -> its headline metric: the
# `metric` of each task class (makd/engine/tasks.py), named here so reading a table imports no training code
# (tests/test_report_detection.py checks the two agree).
TASK_METRICS = {
    "classification": Metric("top1", "test top-1 (%)"),
    "detection": Metric("map", "test COCO mAP (%)"),
}


@dataclass
class RunResult:
    """One finished run: its folder, resolved config (flattened "A.B" keys) and summary.json."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.config.get("SEED", 0)))

    @property
    def task(self) -> str:
        return str(self.summary.get("task", "classification"))

    @property
    def metric(self) -> Metric:
        return TASK_METRICS[self.task]

    @property
    def last(self) -> float:
        """The test metric (top-1 or mAP, %) after the last epoch."""
        return float(self.summary[f"test_{self.metric.key}_last"])

    @property
    def best(self) -> float:
        """The test metric at the selected epoch: the best validation epoch when a validation split exists,
        else the best test epoch (what the official code reported; optimistic)."""
        at_best_val = self.summary.get(f"test_{self.metric.key}_at_best_val")
        if at_best_val is not None:
            return float(at_best_val)
        return float(self.summary[f"test_{self.metric.key}_best"])

    @property
    def best_selected_on(self) -> str:
        return "val" if self.summary.get(f"test_{self.metric.key}_at_best_val") is not None else "test"


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A run's resolved config.yaml, flattened."""
    path = Path(path)
    try:
        tree = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, yaml.YAMLError) as err:
        raise RunFolderError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    if not isinstance(tree, dict):
        raise RunFolderError(f"{path} is not a YAML mapping of config keys")
    return flatten_tree(tree)


def read_run(run_dir: str | os.PathLike) -> RunResult:
    """The finished run in `run_dir`; RunFolderError when it has no summary.json (unfinished) or no config.yaml."""
    run_dir = Path(run_dir)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist")
    if not summary_path.exists():
        raise RunFolderError(f"{run_dir} holds no summary.json: the run is not finished (resume it with --resume)")
    if not config_path.exists():
        raise RunFolderError(f"{run_dir} holds no config.yaml; it is not a run folder of tools/our_train.py")
    try:
        summary = loads_json(summary_path.read_text(encoding="utf-8"), str(summary_path))
    except (OSError, json.JSONDecodeError) as err:
        raise RunFolderError(f"cannot read {summary_path}: {' '.join(str(err).split())}") from None
    if not isinstance(summary, dict):
        raise RunFolderError(f"{summary_path} is not a JSON object; it was not written by tools/our_train.py")
    task = summary.get("task", "classification")
    if task not in TASK_METRICS:
        raise RunFolderError(f"{summary_path}: task {task!r} is unknown (known: {', '.join(TASK_METRICS)})")
    metric = TASK_METRICS[task].key
    for key in (f"test_{metric}_last", f"test_{metric}_best"):
        if not isinstance(summary.get(key), (int, float)) or not math.isfinite(summary[key]):
            raise RunFolderError(f"{summary_path} has no finite {key!r}; it was not written by tools/our_train.py")
    return RunResult(run_dir, read_config(config_path), summary)


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Each path is a run folder (holds config.yaml) or a folder searched recursively for run folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "config.yaml").exists():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.rglob("config.yaml")))
        else:
            raise RunFolderError(f"{path} is neither a run folder nor a folder holding run folders")
    return list(dict.fromkeys(found))


def condition_key(run: RunResult, ignore: Sequence[str] = SEED_ONLY_KEYS) -> tuple:
    """What the run trains: its config without the keys that only name, place or seed it."""
    return tuple(sorted((k, repr(v)) for k, v in run.config.items() if k not in ignore))


def group_by_condition(runs: Sequence[RunResult], ignore: Sequence[str] = SEED_ONLY_KEYS) -> dict[str, list[RunResult]]:
    """Runs grouped by `condition_key`, in order of first appearance, each group named.

    Name: the runs' shared EXPERIMENT.NAME when it is unique to the group; otherwise the config keys in which the
    group differs from the others ("DISTILLER.TYPE=NONE, MaKD.TARGETS=random").
    """
    groups: dict[tuple, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(condition_key(run, ignore), []).append(run)
    names = [_shared_name(members) for members in groups.values()]
    if len(set(names)) < len(names) or None in names:
        names = _difference_names(list(groups.values()), ignore)
    named: dict[str, list[RunResult]] = {}
    for name, members in zip(names, groups.values()):
        seeds = [run.seed for run in members]
        duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
        if duplicates:
            folders = [str(run.path) for run in members if run.seed in duplicates]
            raise RunFolderError(
                f"runs {', '.join(folders)} have the same config and seed {duplicates[0]}; give each folder once"
            )
        named[name] = sorted(members, key=lambda run: run.seed)
    return named


def _shared_name(members: Sequence[RunResult]) -> str | None:
    found = {run.config.get("EXPERIMENT.NAME") or None for run in members}
    return found.pop() if len(found) == 1 else None


def _difference_names(groups: list[list[RunResult]], ignore: Sequence[str]) -> list[str]:
    configs = [{k: v for k, v in members[0].config.items() if k not in ignore} for members in groups]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    if not varying:  # a single group
        return [_shared_name(members) or "runs" for members in groups]
    return [", ".join(f"{k}={c.get(k)}" for k in varying) for c in configs]
