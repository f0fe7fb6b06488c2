"""The first steps of a run, measured before it is started: each loss term's size and gradient share per step.

`probe_first_steps(cfg, steps)` trains the configured run's first optimizer steps in memory (no run folder is
written) through the trainer's own epoch loop, seeded as the run's first epoch (so the numbers are those the run
will see), with the training-health checks measuring every step. tools/health_probe.py prints them: a LaViD lambda
or a MaKD alpha can be checked against a learning rate in seconds rather than after an epoch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch

from makd.engine.distributed import DistInfo, resolve_device
from makd.engine.evaluate import make_eval_loader
from makd.engine.health import TrainingHealth, gradient_ratio
from makd.engine.optim import build_optimizer, build_scheduler
from makd.engine.reproducibility import epoch_seed, seed_everything
from makd.engine.run_logger import RunLogger
from makd.engine.tasks import task_of
from makd.engine.train_state import TrainState
from makd.engine.trainer import EpochContext, MixedPrecision, make_train_loader, train_one_epoch


class FirstBatches:
    """The first `count` batches of a loader, with its dataset: what train_one_epoch reads of a loader."""

    def __init__(self, loader, count: int) -> None:
        self.loader, self.count, self.dataset = loader, count, loader.dataset

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.count)

    def __len__(self) -> int:
        return min(self.count, len(self.loader))


def probing_config(cfg, steps: int):
    """cfg measuring each of the first `steps` steps, with no stop (the probe reports; it never stops)."""
    probe = cfg.clone()
    probe.defrost()
    probe.HEALTH.ENABLED = True
    probe.HEALTH.GRAD_STEPS = list(range(steps))
    probe.HEALTH.STOP_ON = []
    probe.freeze()
    return probe


def probe_first_steps(cfg, steps: int) -> dict[str, Any]:
    """Train the first `steps` optimizer steps of the run `cfg` describes, in memory, on one process.

    Returns {"steps": [{"step", "class_terms", "loss": {term: value}, "grad_norm": {term: norm}}, ...],
    "findings": [...], "steps_per_epoch": len(train loader), "measure_seconds", "measure_cpu_seconds"}. Needs the
    tasks registered (`import makd.tasks`).
    """
    cfg = probing_config(cfg, steps)
    info = DistInfo()
    device = resolve_device(cfg.DEVICE, info)
    if cfg.NUM_THREADS > 0:
        torch.set_num_threads(cfg.NUM_THREADS)
    seed_everything(cfg.SEED)
    task = task_of(cfg, info, device)
    task.build()
    loader, generator = make_train_loader(task.train_set, cfg, info, device.type == "cuda")
    optimizer = build_optimizer(cfg, task.model)
    amp = MixedPrecision(cfg, device)
    state = TrainState(
        task.model, optimizer, build_scheduler(cfg, optimizer, len(loader)), amp.scaler, config=cfg.dump()
    )
    pin = device.type == "cuda"
    task.prepare(  # as the trainer: a CNN teacher's test top-1 (and precomputed logits) before the first step
        {
            split: make_eval_loader(
                dataset, cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.NUM_WORKERS, info, pin, task.eval_collate
            )
            for split, dataset in task.eval_sets.items()
        }
    )
    health = TrainingHealth(cfg, task, info, device, [])
    logger = RunLogger(cfg, Path("."), enabled=False)
    # seeded as the trainer seeds epoch 1 (makd.engine.trainer._train)
    seed = epoch_seed(cfg.SEED, 0, info.rank)
    seed_everything(seed)
    generator.manual_seed(seed)
    loader.sampler.set_epoch(0)
    task.model.set_epoch(0)
    loader.dataset.set_epoch(0)
    ctx = EpochContext(task.model, device, cfg, logger, info, amp, task, health)
    train_one_epoch(state, FirstBatches(loader, steps), ctx)
    return {
        "steps": health.first_steps,
        "findings": [vars(f) for f in health.pending],
        "steps_per_epoch": len(loader),
        "measure_seconds": health.measure_seconds,
        "measure_cpu_seconds": health.measure_cpu_seconds,
    }


def probe_table(result: dict[str, Any]) -> str:
    """The measured steps as a Markdown table: each term's value, the gradient norms on the shared layers, and each
    compared term's ratio to the class terms'."""
    steps = result["steps"]
    if not steps:
        return "no step was measured (the task compares no gradients)\n"
    label = steps[0]["class_terms"]
    terms = [t for t in steps[0]["loss"] if not (t == label and "+" in label)]
    measured = list(steps[0]["grad_norm"])
    header = ["step", *terms, *(f"grad {t}" for t in measured), *(f"{t} / {label}" for t in measured[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in steps:
        norms = m["grad_norm"]
        cells = [str(m["step"]), *(_number(m["loss"][t]) for t in terms), *(_number(norms[t]) for t in measured)]
        cells += [_number(gradient_ratio(norms[t] or 0.0, norms[label] or 0.0)) for t in measured[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    notes = steps[0].get("notes")
    if notes:  # the method's own stability numbers (makd.distillers.base.Distiller.first_step_notes)
        numbers = ", ".join(f"{k} {_number(v)}" for k, v in notes.items() if k != "stable_below")
        bounds = ", ".join(f"{k} below {_number(v)}" for k, v in notes.get("stable_below", {}).items())
        lines += ["", f"step 0: {numbers}" + (f"; trains with {bounds}" if bounds else "")]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
