"""Run logging: metrics.jsonl (strict JSON, NaN written as null), TensorBoard, and wandb when asked.

The file names are makd.engine.run_folder's: that module keeps the one list of what a run writes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from makd.atomic_files import atomic_write_text
from makd.engine import run_folder
from makd.engine.run_manifest import TRAINER
from makd.errors import ConfigError


def metrics_line(row: dict[str, Any]) -> str:
    """One metrics.jsonl line: strict JSON, so NaN / infinity (e.g. an AUC with one class) become null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


class RunLogger:
    """Writes only on the main process; other ranks get a logger that does nothing."""

    def __init__(self, cfg, run_dir: Path, enabled: bool, history: list[dict] | None = None, manifest=None) -> None:
        """`manifest` (a makd.engine.run_manifest.RunManifest) learns the names of the files TensorBoard and wandb
        will write themselves, before they exist."""
        self.enabled = enabled
        self.run_dir = run_dir
        self.tensorboard = None
        self.wandb_run = None
        if not enabled:
            return
        # metrics.jsonl is rewritten from the checkpoint's history, so a resumed run never repeats epochs;
        # whole and atomically every epoch (a few kB), so a kill never leaves a half line.
        self.metrics_path = run_dir / run_folder.METRICS
        self.lines = [metrics_line(row) for row in history or []]
        self._write_metrics()
        from torch.utils.tensorboard import SummaryWriter

        # The event file's name ends with a token only this run knows: the manifest vouches for it by that pattern.
        suffix = f".makd{os.urandom(4).hex()}"
        if manifest is not None:
            manifest.declare(f"{run_folder.TENSORBOARD}/events.out.tfevents.*{suffix}", TRAINER, "pattern")
        self.tensorboard = SummaryWriter(log_dir=str(run_dir / run_folder.TENSORBOARD), filename_suffix=suffix)
        if cfg.LOG.WANDB:
            try:
                import wandb
            except ImportError:
                raise ConfigError(
                    "LOG.WANDB is on but wandb is not installed; pip install wandb or set LOG.WANDB False"
                ) from None
            if manifest is not None:
                manifest.declare(run_folder.WANDB, TRAINER, "folder")
            self.wandb_run = wandb.init(
                project=cfg.EXPERIMENT.PROJECT,
                name=cfg.EXPERIMENT.NAME or None,
                tags=[t.strip() for t in cfg.EXPERIMENT.TAG.split(",") if t.strip()],
                config=_cfg_to_dict(cfg),
                dir=str(run_dir),
                resume="allow",
                id=_wandb_id(run_dir),
            )

    def step(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for key, value in scalars.items():
            self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb_run is not None:
            self.wandb_run.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def epoch(self, row: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        self.lines.append(metrics_line(row))
        self._write_metrics()
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch" and math.isfinite(value):
                self.tensorboard.add_scalar(f"epoch/{key}", value, row["epoch"])
        self.tensorboard.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({f"epoch/{k}": v for k, v in row.items()}, step=step)

    def _write_metrics(self) -> None:
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in self.lines))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _cfg_to_dict(cfg) -> dict:
    import yaml

    return yaml.safe_load(cfg.dump())


def _wandb_id(run_dir: Path) -> str:
    """A stable wandb run id kept in the run folder, so --resume continues the same wandb run."""
    path = run_dir / run_folder.WANDB_ID
    if path.exists():
        return path.read_text().strip()
    run_id = os.urandom(6).hex()
    atomic_write_text(path, run_id + "\n")
    return run_id
