"""The training loop of every task (makd.engine.tasks): the run folder, checkpoints and exact resume, the epoch
loop and its seeding, logging, DDP and the divergence checks, from one frozen config."""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from makd.atomic_files import atomic_copy, atomic_write_json, check_output_location
from makd.config import load_cfg
from makd.config.defaults import flatten_tree
from makd.data import cpu_threads
from makd.data.build import build_data, evaluation_view
from makd.data.loader_settings import loader_settings, worker_count
from makd.engine import run_folder
from makd.engine.checkpoint import (
    check_resume_files,
    load_checkpoint,
    read_latest,
    save_train_state,
    student_state_dict,
)
from makd.engine.distributed import DistInfo, agree, barrier, cleanup, init_distributed, resolve_device
from makd.engine.evaluate import evaluate, make_eval_loader
from makd.engine.health import TrainingHealth
from makd.engine.optim import backward, build_optimizer, build_scheduler
from makd.engine.reproducibility import epoch_seed, seed_everything, use_deterministic_algorithms
from makd.engine.run_folder import inspect_run_folder
from makd.engine.run_inputs import check_resume_inputs, fingerprint_inputs, read_inputs
from makd.engine.run_logger import RunLogger
from makd.engine.run_manifest import TRAINER
from makd.engine.tasks import Task, task_of
from makd.engine.train_state import CheckpointError, TrainState, finite_number
from makd.errors import ConfigError, MakdError, deferred_stop_signals, one_line, raise_if_stopped
from makd.formats.read_log import recording_reads
from makd.models import build_student, input_family_of

# Keys that may differ between a run and its resumption without changing the result.
# NUM_THREADS changes float summation order only, as DEVICE does (so a run slowed by a busy machine can continue
# with fewer threads: makd.data.cpu_threads.RateWatch says so); HEALTH.* only watches.
RESUME_SAFE_KEYS = (
    "DATASET.NUM_WORKERS", "DATASET.TEST.BATCH_SIZE", "DEVICE", "LOG.", "OUTPUT_DIR", "NUM_THREADS", "HEALTH.",
)  # fmt: skip


class NonFiniteLossError(MakdError, RuntimeError):
    """A training loss became NaN or infinite."""


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """A permutation drawn from (seed, epoch) and split across ranks (padded to equal length by wrapping).

    It yields (epoch, index) keys: persistent DataLoader workers keep the dataset copy they started with,
    so the epoch of every sample's augmentation seed travels with its index (AspectDataset.__getitem__).
    """

    def __init__(self, length: int, seed: int, info: DistInfo) -> None:
        self.length, self.seed, self.info, self.epoch = length, seed, info, 0
        self.per_rank = -(-length // info.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator).tolist()
        order += order[: self.per_rank * self.info.world_size - self.length]
        return iter([(self.epoch, i) for i in order[self.info.rank :: self.info.world_size]])

    def __len__(self) -> int:
        return self.per_rank


def run_dir_of(cfg) -> Path:
    if cfg.OUTPUT_DIR:
        return Path(cfg.OUTPUT_DIR)
    return Path(cfg.LOG.PREFIX) / cfg.EXPERIMENT.PROJECT / (cfg.EXPERIMENT.NAME or "run")


def _config_differences(saved_yaml: str, cfg) -> list[str]:
    import yaml

    saved, current = flatten_tree(yaml.safe_load(saved_yaml)), flatten_tree(yaml.safe_load(cfg.dump()))
    keys = sorted(set(saved) | set(current))
    return [k for k in keys if saved.get(k) != current.get(k) and not k.startswith(RESUME_SAFE_KEYS)]


def make_train_loader(dataset, cfg, info: DistInfo, pin_memory: bool) -> tuple[DataLoader, torch.Generator]:
    sampler = EpochShuffleSampler(len(dataset), cfg.SEED, info)
    generator = torch.Generator()  # reseeded every epoch: sets each epoch's worker seeds
    # BatchNorm cannot train on a batch of one sample: drop a last batch of exactly one.
    drop_last = len(sampler) % cfg.SOLVER.BATCH_SIZE == 1
    loader = DataLoader(
        dataset,
        batch_size=cfg.SOLVER.BATCH_SIZE,
        sampler=sampler,
        drop_last=drop_last,
        generator=generator,
        collate_fn=dataset.collate_fn,
        **loader_settings(cfg.DATASET.NUM_WORKERS, pin_memory, persistent=True),
    )
    return loader, generator


class MixedPrecision:
    """SOLVER.AMP on CUDA: autocast in SOLVER.AMP_DTYPE (`amp_dtype`), float16 with a loss scaler; off on CPU.

    Built once per run so the float16 loss scale carries across epochs (and into checkpoints).
    """

    def __init__(self, cfg, device: torch.device) -> None:
        self.dtype = None
        if cfg.SOLVER.AMP and device.type == "cuda":
            self.dtype = amp_dtype(cfg.SOLVER.AMP_DTYPE)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else nullcontext()


def amp_dtype(name: str) -> torch.dtype:
    """SOLVER.AMP_DTYPE on the current CUDA device. "auto" takes bfloat16 only where the GPU computes it natively
    (compute capability 8.0 and later): torch also reports bfloat16 as supported where it is emulated (V100, T4),
    many times slower than float16 there."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@dataclass
class EpochContext:
    """What an epoch needs besides the TrainState: the model to call (the distiller, or its DDP wrapper), ..."""

    model: torch.nn.Module
    device: torch.device
    cfg: Any
    logger: RunLogger
    info: DistInfo
    amp: MixedPrecision
    task: Task
    health: TrainingHealth | None = None  # the training-health checks (makd.engine.health)


def train_one_epoch(state: TrainState, loader: DataLoader, ctx: EpochContext) -> dict[str, float]:
    """One pass over the training split (advances `state.step`); returns mean losses, train top-1 (when the task
    has one), throughput."""
    model, cfg, optimizer, scheduler, scaler = ctx.model, ctx.cfg, state.optimizer, state.scheduler, state.scaler
    model.train()
    sums: dict[str, float] = {}
    correct = seen = 0
    first_lr = last_lr = optimizer.param_groups[0]["lr"]  # the rates this epoch's first and last steps use
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {state.epoch + 1}/{cfg.SOLVER.EPOCHS}",
        leave=False,
        disable=None if ctx.info.is_main else True,  # None: a bar on a terminal only, never in a log file
        mininterval=1.0,
        dynamic_ncols=True,
    )
    for batch in bar:
        raise_if_stopped()  # a stop whose exception Python had to drop (makd.errors) is raised here, between steps
        batch = ctx.task.batch_to_device(batch, loader.dataset)
        with ctx.amp.autocast():
            outputs, losses = model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLossError(
                f"non-finite loss at epoch {state.epoch + 1}, step {state.step}: {values}; {_kept(state)} "
                "(lower SOLVER.LR, enable SOLVER.GRAD_CLIP, or check the aspect targets)"
            )
        if ctx.health is not None:  # before the backward pass: the first steps' gradient shares need the graph
            ctx.health.step(state.step, state.epoch, outputs, losses, batch)
        optimizer.zero_grad(set_to_none=True)
        last_lr = optimizer.param_groups[0]["lr"]  # read before scheduler.step(), which sets the next step's rate
        backward(optimizer, losses, total, scaler)
        if cfg.SOLVER.GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.GRAD_CLIP)
        if scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        state.step += 1
        size, right = ctx.task.batch_counts(outputs, batch)
        seen += size
        correct = None if right is None else correct + right
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * size
        sums["loss"] = sums.get("loss", 0.0) + float(total.detach()) * size
        if state.step % max(1, cfg.LOG.TENSORBOARD_FREQ) == 0:
            ctx.logger.step(
                state.step,
                {
                    "loss": float(total.detach()),
                    "lr": last_lr,  # the rate this step used
                    **{k: float(v.detach()) for k, v in losses.items()},
                },
            )
        bar.set_postfix(loss=f"{float(total.detach()):.3f}", refresh=False)
    elapsed = time.perf_counter() - start
    stats = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
    if correct is not None:
        stats["train_top1"] = 100.0 * correct / max(seen, 1)
    stats["train_images_per_s"] = seen * ctx.info.world_size / max(elapsed, 1e-9)
    stats["epoch_seconds"] = elapsed
    stats["lr"], stats["lr_last"] = first_lr, last_lr
    return stats


def _kept(state: TrainState) -> str:
    """What a run stopped by divergence still has, for its one-line error."""
    if state.epoch == 0:
        return "no checkpoint was written (no epoch finished)"
    return f"the last good {run_folder.LATEST} (epoch {state.epoch}) is kept"


# Classification's selection metric and finite keys: the defaults of the helpers below (and of older callers).
EVALUATION_KEYS = ("top1", "top5", "loss")


def _is_good_row(row: dict, split: str, keys: tuple[str, ...] = EVALUATION_KEYS) -> bool:
    return all(finite_number(row.get(f"{split}_{key}")) for key in keys)


def best_epochs(history: list[dict], metric: str = "top1", keys: tuple[str, ...] = EVALUATION_KEYS) -> dict[str, Any]:
    """Best test `metric` over evaluated epochs and, when a validation split exists, the val-selected epoch.

    Only epochs whose evaluation is finite (every one of `keys`) can be best. Keys: test_<metric>_best,
    test_<metric>_best_epoch, and val_<metric>_best + test_<metric>_at_best_val with a validation split.
    """
    test, val = f"test_{metric}", f"val_{metric}"
    evaluated = [row for row in history if test in row and _is_good_row(row, "test", keys)]
    out: dict[str, Any] = {}
    if not evaluated:
        return out
    by_test = max(evaluated, key=lambda row: (row[test], -row["epoch"]))
    out.update({f"{test}_best": by_test[test], f"{test}_best_epoch": by_test["epoch"]})
    if val in evaluated[0]:
        validated = [row for row in evaluated if _is_good_row(row, "val", keys)]
        if not validated:
            return out
        by_val = max(validated, key=lambda row: (row[val], -row["epoch"]))
        out.update(
            {
                f"{val}_best": by_val[val],
                f"{test}_at_best_val": by_val[test],
                "best_epoch": by_val["epoch"],
                "best_selected_on": "val",
            }
        )
    else:
        out.update(best_epoch=by_test["epoch"], best_selected_on="test")
    return out


_best_epochs = best_epochs  # the name tests and older code use


def train(cfg, *, resume: bool = False, overwrite: bool = False, stop_after_epoch: int | None = None) -> dict | None:
    """Train the configured student; returns the summary (None when stopped early by `stop_after_epoch`)."""
    device_kind = (
        "cuda" if cfg.DEVICE.startswith("cuda") or (cfg.DEVICE == "auto" and torch.cuda.is_available()) else "cpu"
    )
    info = init_distributed(device_kind)
    try:
        return _train(cfg, info, resume, overwrite, stop_after_epoch)
    finally:
        cleanup(info)


def _read_resume_checkpoint(cfg, run_dir: Path) -> dict[str, Any]:
    """latest.pth, refused (before anything is built or changed) when it is unreadable or the config differs."""
    latest = read_latest(run_dir)
    differences = _config_differences(latest["config"], cfg)
    if differences:
        raise ConfigError(
            f"--resume: the config differs from the saved run in {', '.join(differences[:6])}; "
            "resume with the same config or start a new run folder"
        )
    return latest


def _train(cfg, info: DistInfo, resume: bool, overwrite: bool, stop_after_epoch: int | None) -> dict | None:
    if resume and overwrite:  # before the folder is locked (which may create it)
        raise run_folder.RunFolderError("--resume and --overwrite contradict each other; pass one of them")
    device = agree(info, lambda: resolve_device(cfg.DEVICE, info))
    # Before anything else runs: the measured check needs idle cores of its own (the workers start later).
    threads = cpu_threads.choose_threads(cfg.NUM_THREADS, device.type, worker_count(cfg.DATASET.NUM_WORKERS))
    cpu_threads.apply(threads)
    rate_watch = cpu_threads.RateWatch(threads)
    seed_everything(cfg.SEED)
    if cfg.DETERMINISTIC:
        use_deterministic_algorithms(device)
    run_dir = run_dir_of(cfg)
    # One writer at a time: the main process locks the folder (creating it if needed) before looking at it, and a
    # run refused before its commit leaves the folder as it was (a folder created for the lock is removed again).
    lock = run_folder.RunFolderLock(run_dir)
    try:
        plan = agree(info, lambda: _claim_run_folder(lock, run_dir, info, resume, overwrite))
        return _train_in_folder(cfg, info, device, run_dir, plan, resume, stop_after_epoch, (threads, rate_watch))
    finally:
        lock.release(keep_folder=False)  # removes only folders the lock created and nothing was written into


def _claim_run_folder(
    lock: run_folder.RunFolderLock, run_dir: Path, info: DistInfo, resume: bool, overwrite: bool
) -> run_folder.RunFolderPlan | None:
    """The main process's lock and check of the run folder (nothing in it changes until plan.commit)."""
    if not info.is_main:
        return None
    lock.acquire()
    plan = inspect_run_folder(run_dir, resume, overwrite)
    if not resume:
        check_output_location(run_dir / run_folder.CONFIG, "run folder (OUTPUT_DIR)")
    return plan


def _train_in_folder(cfg, info: DistInfo, device, run_dir: Path, plan, resume: bool, stop_after_epoch: int | None,
                     threads):  # fmt: skip
    """From the locked, checked run folder to the summary; `threads`: (the CPU thread choice, its RateWatch)."""
    latest = agree(info, lambda: _read_resume_checkpoint(cfg, run_dir)) if resume else None
    task = task_of(cfg, info, device)
    # Every input file the task reads is noted with the sha256 of the bytes it parsed: the run's fingerprints.
    with recording_reads() as reads:
        agree(info, task.build)
    inputs = fingerprint_inputs(cfg, reads, {"train": task.train_set, **task.eval_sets}, info.world_size)
    input_warnings = agree(info, lambda: check_resume_inputs(read_inputs(run_dir), inputs, run_dir)) if resume else []
    distiller = task.model
    pin = device.type == "cuda"
    train_loader, loader_generator = make_train_loader(task.train_set, cfg, info, pin)
    eval_loaders = {
        split: make_eval_loader(
            dataset, cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.NUM_WORKERS, info, pin, collate_fn=task.eval_collate
        )
        for split, dataset in task.eval_sets.items()
    }
    task.prepare(eval_loaders)
    optimizer = build_optimizer(cfg, distiller)
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    amp = MixedPrecision(cfg, device)
    state = TrainState(
        distiller,
        optimizer,
        scheduler,
        amp.scaler,
        config=cfg.dump(),
        metadata=task.metadata,
    )
    resume_check = None
    if latest is not None:
        state.restore(latest, str(run_dir / run_folder.LATEST), len(train_loader))
        if info.is_main:  # only the main process writes (and so repairs) run files
            resume_check = check_resume_files(
                run_dir,
                latest,
                best_epochs(state.history, task.metric, task.finite_keys).get("best_epoch"),
                cfg.LOG.SAVE_CHECKPOINT_FREQ,
                tuple(plan.unvouched_checkpoints),
            )
        del latest

    def commit():
        if not info.is_main:
            return None
        manifest = plan.commit(cfg.dump())
        with manifest.recording(TRAINER):
            if not resume or input_warnings:  # a run folder older than inputs.json gets one now
                atomic_write_json(run_dir / run_folder.INPUTS, inputs)
            if resume_check is not None:
                resume_check.apply(run_dir)
        for line in [*plan.warnings, *input_warnings, *(resume_check.warnings if resume_check else [])]:
            print(f"[makd] warning: {line}", file=sys.stderr, flush=True)
        return manifest

    manifest = agree(info, commit)
    with manifest.recording(TRAINER) if manifest is not None else nullcontext():
        return _run_epochs(cfg, info, device, run_dir, task, state, train_loader, loader_generator, eval_loaders,
                           amp, manifest, resume, stop_after_epoch, threads)  # fmt: skip


def _run_epochs(cfg, info, device, run_dir, task, state, train_loader, loader_generator, eval_loaders, amp, manifest,
                resume, stop_after_epoch, threads):  # fmt: skip
    distiller = task.model
    threads, rate_watch = threads
    logger = RunLogger(cfg, run_dir, info.is_main, state.history, manifest)
    model = distiller
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            distiller, device_ids=[device.index] if device.type == "cuda" else None
        )
    health = TrainingHealth(cfg, task, info, device, state.history)
    ctx = EpochContext(model, device, cfg, logger, info, amp, task, health)
    if info.is_main:
        group = f" ({torch.distributed.get_backend()})" if info.enabled else ""
        print(f"[makd] run {run_dir} | {task.describe()} | {device} x{info.world_size}{group}", flush=True)
        if resume:
            print(f"[makd] resumed from epoch {state.epoch} of {cfg.SOLVER.EPOCHS} ({run_folder.LATEST})", flush=True)
        print(f"[makd] threads: {threads.line('NUM_THREADS')}", flush=True)
        print(f"[makd] {_loss_line(distiller)}", flush=True)
        if threads.warning:
            print(f"[makd] warning: {threads.warning}", file=sys.stderr, flush=True)

    if stop_after_epoch is not None and stop_after_epoch <= state.epoch < cfg.SOLVER.EPOCHS:
        if info.is_main:
            print(f"[makd] epoch {state.epoch} is already done (--stop-after-epoch {stop_after_epoch})", flush=True)
        logger.close()
        return None
    try:
        for epoch in range(state.epoch, cfg.SOLVER.EPOCHS):
            seed = epoch_seed(cfg.SEED, epoch, info.rank)
            seed_everything(seed)
            loader_generator.manual_seed(seed)
            train_loader.sampler.set_epoch(epoch)
            distiller.set_epoch(epoch)
            train_loader.dataset.set_epoch(epoch)  # per-sample augmentation seeds from (SEED, epoch, index)
            stats = train_one_epoch(state, train_loader, ctx)
            # lr: the rate of the epoch's first step (after it, the scheduler already holds the next epoch's rate);
            # lr_last: its last step's; loss_weights: what each train_loss_<name> is multiplied by in the sum
            row = {"epoch": epoch + 1, "lr": stats.pop("lr"), **stats, "loss_weights": _loss_weights(distiller)}
            row["num_threads"] = torch.get_num_threads()
            _check_finite_state(state, row["epoch"])
            is_last = epoch + 1 == cfg.SOLVER.EPOCHS
            if (epoch + 1) % max(1, cfg.LOG.EVAL_FREQ) == 0 or is_last:
                for split, loader in eval_loaders.items():
                    for key, value in task.evaluate(split, loader).items():
                        row[f"{split}_{key}"] = value
                _check_finite_evaluation(state, row, eval_loaders, task.finite_keys)
            state.epoch = epoch + 1
            state.train_seconds += stats["epoch_seconds"]
            ctx.health.end_of_epoch(row, state.history)  # its findings go into the row, saved with it
            state.history.append(row)
            # SIGTERM or Ctrl-C during the saves waits for them: the epoch just finished is kept whole.
            with deferred_stop_signals():
                if info.is_main:
                    _save_epoch(cfg, run_dir, state, task)
                logger.epoch(row, state.step)
            if info.is_main:
                print(_epoch_line(cfg, row, state.history, task), flush=True)
            slowdown = rate_watch.observe(row["epoch"], row["train_images_per_s"])
            if slowdown and info.is_main:
                print(f"[makd] warning: {slowdown}", file=sys.stderr, flush=True)
            ctx.health.after_epoch_saved()  # warning lines; HEALTH.STOP_ON stops here
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and not is_last:
                if info.is_main:
                    print(f"[makd] stopped after epoch {epoch + 1} as asked; continue with --resume", flush=True)
                return None
        if info.is_main:
            task.finish(run_dir, logger, state.step)
    except MakdError as err:
        err.rank_specific = info.enabled  # met while training: possibly by this process alone (its batches)
        raise
    finally:
        logger.close()

    summary = task.summary(state.history, state.train_seconds)
    summary["health"] = ctx.health.summary(state.history)
    if info.is_main:
        task.export(run_dir / run_folder.STUDENT)
        atomic_write_json(run_dir / run_folder.SUMMARY, summary)
        print(
            "[makd] summary " + json.dumps({k: summary.get(k) for k in task.summary_line_keys}),
            flush=True,
        )
    barrier(info)
    return summary


def _check_finite_state(state: TrainState, epoch: int) -> None:
    """Weights and buffers (BatchNorm running statistics) must be finite before the epoch may be saved."""
    bad = state.nonfinite_entries()
    if bad:
        raise NonFiniteLossError(
            f"non-finite weights or buffers after epoch {epoch} ({', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}); {_kept(state)} "
            "(lower SOLVER.LR or enable SOLVER.GRAD_CLIP)"
        )


def _check_finite_evaluation(
    state: TrainState, row: dict, eval_loaders: dict, keys: tuple[str, ...] = EVALUATION_KEYS
) -> None:
    """A NaN/infinite evaluation means the model diverged: such an epoch is neither saved nor ever "best"."""
    for split in eval_loaders:
        if not _is_good_row(row, split, keys):
            values = {key: row.get(f"{split}_{key}") for key in keys}
            raise NonFiniteLossError(
                f"non-finite {split} evaluation after epoch {row['epoch']} ({values}); {_kept(state)} "
                "(lower SOLVER.LR or enable SOLVER.GRAD_CLIP)"
            )


def _save_epoch(cfg, run_dir: Path, state: TrainState, task: Task) -> None:
    """latest (every epoch), best (when the selection metric improves), epoch_<n> (every SAVE_CHECKPOINT_FREQ).

    Each is written atomically, latest first: a kill between the writes leaves best/epoch_<n> one epoch
    behind, which --resume repairs from latest.pth (makd.engine.checkpoint.check_resume_files).
    """
    latest = run_dir / run_folder.LATEST
    save_train_state(latest, state)
    if best_epochs(state.history, task.metric, task.finite_keys).get("best_epoch") == state.epoch:
        atomic_copy(latest, run_dir / run_folder.BEST)
    if cfg.LOG.SAVE_CHECKPOINT_FREQ and state.epoch % cfg.LOG.SAVE_CHECKPOINT_FREQ == 0:
        atomic_copy(latest, run_dir / run_folder.epoch_snapshot(state.epoch))


def _loss_weights(distiller) -> dict[str, float]:
    """{term name (ce, aspect, ...): weight} of the terms the method declares (makd.distillers.base.loss_weights)."""
    declared = getattr(distiller, "loss_weights", dict)()
    return {name.removeprefix("loss_"): float(weight) for name, (weight, _) in declared.items()}


def _loss_line(distiller) -> str:
    """The loss as the method sums it, once at start: "loss = MaKD.CE_WEIGHT 1 x ce + MaKD.ALPHA 4 x aspect"."""
    declared = getattr(distiller, "loss_weights", dict)()
    if not declared:
        return "loss = the sum of the terms the method returns (it declares no weights; shown as returned)"
    terms = " + ".join(f"{source} {weight:g} x {name.removeprefix('loss_')}" for name, (weight, source) in
                       declared.items())  # fmt: skip
    return f"loss = {terms} (+ any other term as returned); each epoch line shows every term before its weight"


def _loss_part(row: dict) -> str:
    """ "loss 1.2332 = 1 x ce 0.9000 + 4 x aspect 0.0833": each term's own loss (CE, BCE, ...) and its weight, so the
    sum can be checked and the aspect BCE compared across MaKD.ALPHA values; an undeclared term as returned."""
    weights = row.get("loss_weights") or {}
    terms = []
    for key, value in row.items():
        if not key.startswith("train_loss_"):
            continue
        name = key.removeprefix("train_loss_")
        weight = weights.get(name)
        if weight is None:
            terms.append(f"{name} {value:.4f}")
        elif weight == 0:
            terms.append(f"0 x {name} -")  # weighted by 0: its own value is not recoverable from the sum
        else:
            terms.append(f"{weight:g} x {name} {value / weight:.4f}")
    return f"loss {row['train_loss']:.4f}" + (f" = {' + '.join(terms)}" if terms else "")


def _lr_part(row: dict) -> str:
    """The rate the epoch trained with: one value, or first..last step where it changed within the epoch."""
    first, last = row["lr"], row.get("lr_last", row["lr"])
    return f"lr {first:.2e}" if math.isclose(first, last, rel_tol=1e-6) else f"lr {first:.2e}..{last:.2e}"


def _epoch_line(cfg, row: dict, history: list[dict], task: Task) -> str:
    parts = [f"epoch {row['epoch']}/{cfg.SOLVER.EPOCHS}", _lr_part(row), _loss_part(row)]
    parts += task.epoch_parts(row)
    best = best_epochs(history, task.metric, task.finite_keys)
    if "best_epoch" in best:
        parts.append(f"best@{best['best_epoch']}")
    parts.append(f"{row['epoch_seconds']:.1f}s ({row['train_images_per_s']:.0f} img/s)")
    return " | ".join(parts)


def evaluate_checkpoint(config_path: str, checkpoint_path: str, opts=(), split: str = "test") -> dict[str, Any]:
    """Score a saved student (training checkpoint or student export) on the configured split: evaluate()'s numbers,
    the class names and the confusion matrix ("confusion", [C][C] counts, row = true class).

    Every split is scored with the evaluation transform (resize + centre crop), the training split too,
    so two calls on one checkpoint give the same numbers.
    """
    cfg = load_cfg(config_path, opts)
    if cfg.TASK != "classification":
        raise ConfigError(
            f"tools/eval.py scores classification students, but {config_path} has TASK {cfg.TASK}; a detection "
            "run's final test mAP is in its summary.json and detections_test.json (docs/detection.md)"
        )
    info = DistInfo()
    device = resolve_device(cfg.DEVICE, info)
    data = build_data(cfg)
    state = load_checkpoint(checkpoint_path)
    weights = student_state_dict(state)
    num_outputs = state.get("num_classes", data.num_classes) + state.get("num_aspects", 0)
    if state.get("num_classes", data.num_classes) != data.num_classes:
        raise ConfigError(
            f"{checkpoint_path} was trained on {state['num_classes']} classes but the config's data "
            f"has {data.num_classes}; use the matching config"
        )
    student = build_student(
        state.get("student", cfg.DISTILLER.STUDENT), num_outputs, input_family=input_family_of(cfg)
    ).to(device)
    try:
        student.load_state_dict(weights)
    except RuntimeError as err:  # shapes or keys of another architecture
        raise CheckpointError(
            f"{checkpoint_path} does not fit student {state.get('student', cfg.DISTILLER.STUDENT)} "
            f"({one_line(str(err))[:200]}); use the config it was trained with"
        ) from None
    if split == "train":
        dataset = evaluation_view(data.train, cfg)
    else:
        dataset = {"test": data.test, "val": data.val}[split]
    if dataset is None:
        raise ConfigError(f"split {split!r} does not exist (set DATASET.VAL_FRACTION for a validation split)")
    loader = make_eval_loader(
        dataset, cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.NUM_WORKERS, info, device.type == "cuda"
    )
    result = evaluate(student, loader, data.num_classes, device, info, confusion=True)
    result["confusion"] = result["confusion"].tolist()  # plain lists: the result is JSON-ready and comparable
    return {"split": split, "checkpoint": str(checkpoint_path), "class_names": list(data.class_names), **result}
