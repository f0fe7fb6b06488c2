"""Run logging: one line per epoch on stdout, metrics.jsonl, TensorBoard, and wandb when asked."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from makd.config import ConfigError


class RunLogger:
    """Writes only on the main process; other ranks get a logger that does nothing."""

    def __init__(self, cfg, run_dir: Path, enabled: bool, history: list[dict] | None = None) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.tensorboard = None
        self.wandb_run = None
        if not enabled:
            return
        # metrics.jsonl is rewritten from the checkpoint's history, so a resumed run never repeats epochs.
        self.metrics_path = run_dir / "metrics.jsonl"
        with open(self.metrics_path, "w", encoding="utf-8") as fh:
            for row in history or []:
                fh.write(json.dumps(row) + "\n")
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if cfg.LOG.WANDB:
            try:
                import wandb
            except ImportError:
                raise ConfigError(
                    "LOG.WANDB is on but wandb is not installed; pip install wandb or set LOG.WANDB False"
                ) from None
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
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch" and math.isfinite(value):
                self.tensorboard.add_scalar(f"epoch/{key}", value, row["epoch"])
        self.tensorboard.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({f"epoch/{k}": v for k, v in row.items()}, step=step)

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
    path = run_dir / "wandb_id.txt"
    if path.exists():
        return path.read_text().strip()
    run_id = os.urandom(6).hex()
    path.write_text(run_id + "\n")
    return run_id
