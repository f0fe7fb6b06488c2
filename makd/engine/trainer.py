"""The training loop: data, student, distiller, optimizer and schedule from one frozen config."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

import makd
from makd.artifacts import atomic_write_json, atomic_write_text
from makd.config import ConfigError, load_cfg
from makd.config.defaults import uses_aspects
from makd.data.build import DataBundle, build_data
from makd.distillers import build_distiller
from makd.engine.checkpoint import load_checkpoint, save_checkpoint
from makd.engine.distributed import DistInfo, barrier, cleanup, init_distributed, resolve_device
from makd.engine.evaluate import evaluate, make_eval_loader
from makd.engine.optim import build_optimizer, build_scheduler
from makd.engine.reproducibility import epoch_seed, rng_states, seed_everything, set_rng_states
from makd.engine.run_logger import RunLogger
from makd.errors import MakdError
from makd.models import build_student

# Keys that may differ between a run and its resumption without changing the result.
RESUME_SAFE_KEYS = ("DATASET.NUM_WORKERS", "DATASET.TEST.BATCH_SIZE", "DEVICE", "LOG.", "OUTPUT_DIR")


class NonFiniteLossError(MakdError, RuntimeError):
    """A training loss became NaN or infinite."""


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch) and split across ranks (padded to equal length by wrapping)."""

    def __init__(self, length: int, seed: int, info: DistInfo) -> None:
        self.length, self.seed, self.info, self.epoch = length, seed, info, 0
        self.per_rank = -(-length // info.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator).tolist()
        order += order[: self.per_rank * self.info.world_size - self.length]
        return iter(order[self.info.rank :: self.info.world_size])

    def __len__(self) -> int:
        return self.per_rank


def run_dir_of(cfg) -> Path:
    if cfg.OUTPUT_DIR:
        return Path(cfg.OUTPUT_DIR)
    return Path(cfg.LOG.PREFIX) / cfg.EXPERIMENT.PROJECT / (cfg.EXPERIMENT.NAME or "run")


def _config_differences(saved_yaml: str, cfg) -> list[str]:
    import yaml

    def flatten(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    saved, current = flatten(yaml.safe_load(saved_yaml)), flatten(yaml.safe_load(cfg.dump()))
    keys = sorted(set(saved) | set(current))
    return [k for k in keys if saved.get(k) != current.get(k) and not k.startswith(RESUME_SAFE_KEYS)]


def prepare_run_dir(cfg, resume: bool, overwrite: bool, info: DistInfo) -> Path:
    run_dir = run_dir_of(cfg)
    latest = run_dir / "latest.pth"
    if resume and not latest.exists():
        raise FileNotFoundError(f"--resume: no checkpoint {latest} to continue from; drop --resume to start")
    if not resume and (latest.exists() or (run_dir / "summary.json").exists()):
        if not overwrite:
            raise FileExistsError(
                f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to start "
                "over, or set OUTPUT_DIR / EXPERIMENT.NAME"
            )
        if info.is_main:
            shutil.rmtree(run_dir)
    barrier(info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.dump())
    return run_dir


def make_train_loader(dataset, cfg, info: DistInfo, pin_memory: bool) -> tuple[DataLoader, torch.Generator]:
    sampler = EpochShuffleSampler(len(dataset), cfg.SEED, info)
    generator = torch.Generator()  # reseeded every epoch: sets each epoch's worker seeds
    # BatchNorm cannot train on a batch of one sample: drop a last batch of exactly one.
    drop_last = len(sampler) % cfg.SOLVER.BATCH_SIZE == 1
    loader = DataLoader(
        dataset,
        batch_size=cfg.SOLVER.BATCH_SIZE,
        sampler=sampler,
        num_workers=cfg.DATASET.NUM_WORKERS,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=False,
        collate_fn=dataset.collate_fn,
    )
    return loader, generator


class MixedPrecision:
    """SOLVER.AMP on CUDA: bfloat16 autocast where supported, else float16 with a loss scaler; off on CPU.

    Built once per run so the float16 loss scale carries across epochs (and into checkpoints).
    """

    def __init__(self, cfg, device: torch.device) -> None:
        self.dtype = None
        if cfg.SOLVER.AMP and device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else nullcontext()


def train_one_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    device,
    epoch: int,
    cfg,
    logger: RunLogger,
    info: DistInfo,
    global_step: int,
    amp: MixedPrecision,
) -> tuple[dict[str, float], int]:
    """One pass over the training split; returns mean losses, train top-1 and throughput, and the new step."""
    model.train()
    scaler = amp.scaler
    sums: dict[str, float] = {}
    correct = seen = 0
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{cfg.SOLVER.EPOCHS}",
        leave=False,
        disable=not info.is_main,
        mininterval=1.0,
        dynamic_ncols=True,
    )
    for batch in bar:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        labels = batch.get("label_index", batch["label"])  # "label" is [B, C] under smoothing / mixup
        with amp.autocast():
            class_logits, losses = model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1}, step {global_step}: {values}; the last good checkpoint is kept "
                "(lower SOLVER.LR, enable SOLVER.GRAD_CLIP, or check the aspect targets)"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        if cfg.SOLVER.GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.GRAD_CLIP)
        if scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        global_step += 1
        batch = labels.numel()
        seen += batch
        correct += int((class_logits.argmax(dim=1) == labels).sum())
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * batch
        sums["loss"] = sums.get("loss", 0.0) + float(total.detach()) * batch
        if global_step % max(1, cfg.LOG.TENSORBOARD_FREQ) == 0:
            logger.step(
                global_step,
                {
                    "loss": float(total.detach()),
                    "lr": optimizer.param_groups[0]["lr"],
                    **{k: float(v.detach()) for k, v in losses.items()},
                },
            )
        bar.set_postfix(loss=f"{float(total.detach()):.3f}", refresh=False)
    elapsed = time.perf_counter() - start
    stats = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
    stats["train_top1"] = 100.0 * correct / max(seen, 1)
    stats["train_images_per_s"] = seen * info.world_size / max(elapsed, 1e-9)
    stats["epoch_seconds"] = elapsed
    return stats, global_step


def _best_epochs(history: list[dict]) -> dict[str, Any]:
    """Best test top-1 over evaluated epochs and, when a validation split exists, the val-selected epoch."""
    evaluated = [row for row in history if "test_top1" in row]
    out: dict[str, Any] = {}
    if not evaluated:
        return out
    by_test = max(evaluated, key=lambda row: (row["test_top1"], -row["epoch"]))
    out.update(test_top1_best=by_test["test_top1"], test_top1_best_epoch=by_test["epoch"])
    if "val_top1" in evaluated[0]:
        by_val = max(evaluated, key=lambda row: (row["val_top1"], -row["epoch"]))
        out.update(
            val_top1_best=by_val["val_top1"],
            test_top1_at_best_val=by_val["test_top1"],
            best_epoch=by_val["epoch"],
            best_selected_on="val",
        )
    else:
        out.update(best_epoch=by_test["epoch"], best_selected_on="test")
    return out


def _summary(cfg, data: DataBundle, history: list[dict], info: DistInfo, train_seconds: float) -> dict[str, Any]:
    last = [row for row in history if "test_top1" in row][-1]
    summary = {
        "test_top1_last": last["test_top1"],
        "test_top5_last": last["test_top5"],
        **_best_epochs(history),
        "epochs": cfg.SOLVER.EPOCHS,
        "num_classes": data.num_classes,
        "num_aspects": data.num_aspects,
        "student": cfg.DISTILLER.STUDENT,
        "distiller": cfg.DISTILLER.TYPE,
        "targets": cfg.MaKD.TARGETS if data.num_aspects else None,
        "seed": cfg.SEED,
        "aspect_file": data.aspect_path or None,
        "aspect_sha256": data.aspect_sha256 or None,
        "num_train_images": len(data.train),
        "num_val_images": len(data.val) if data.val is not None else 0,
        "num_test_images": len(data.test),
        "dropped_train_images": len(data.dropped_ids),
        "recipe": data.recipe,
        "world_size": info.world_size,
        "train_seconds": train_seconds,
        "makd_version": makd.__version__,
    }
    for key in ("test_aspect_mae", "test_aspect_auc"):
        if key in last:
            summary[f"{key}_last"] = last[key]
    return summary


def _export_student(path: Path, student, cfg, data: DataBundle) -> None:
    save_checkpoint(
        path,
        {
            "model": student.state_dict(),
            "student": cfg.DISTILLER.STUDENT,
            "num_outputs": data.num_classes + data.num_aspects,
            "num_classes": data.num_classes,
            "num_aspects": data.num_aspects,
            "class_names": data.class_names,
            "config": cfg.dump(),
        },
    )


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


def _train(cfg, info: DistInfo, resume: bool, overwrite: bool, stop_after_epoch: int | None) -> dict | None:
    device = resolve_device(cfg.DEVICE, info)
    if cfg.NUM_THREADS > 0:
        torch.set_num_threads(cfg.NUM_THREADS)
    seed_everything(cfg.SEED)
    if cfg.DETERMINISTIC:
        torch.use_deterministic_algorithms(True)
    run_dir = prepare_run_dir(cfg, resume, overwrite, info)

    data = build_data(cfg)
    num_aspects = data.num_aspects if uses_aspects(cfg) else 0
    student = build_student(
        cfg.DISTILLER.STUDENT, data.num_classes + num_aspects, pretrained_path=cfg.DISTILLER.STUDENT_PRETRAINED
    )
    distiller = build_distiller(cfg, student, data.num_classes, num_aspects).to(device)
    pin = device.type == "cuda"
    train_loader, loader_generator = make_train_loader(data.train, cfg, info, pin)
    eval_loaders = {
        "test": make_eval_loader(data.test, cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.NUM_WORKERS, info, pin)
    }
    if data.val is not None:
        eval_loaders["val"] = make_eval_loader(
            data.val, cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.NUM_WORKERS, info, pin
        )
    optimizer = build_optimizer(cfg, distiller)
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    amp = MixedPrecision(cfg, device)

    start_epoch, history, train_seconds = 0, [], 0.0
    if resume:
        state = load_checkpoint(run_dir / "latest.pth", map_location="cpu")
        differences = _config_differences(state["config"], cfg)
        if differences:
            raise ConfigError(
                f"--resume: the config differs from the saved run in {', '.join(differences[:6])}; "
                "resume with the same config or start a new run folder"
            )
        distiller.student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty when the loss scaler is off (CPU, bfloat16, no AMP)
            amp.scaler.load_state_dict(state["scaler"])
        start_epoch, history, train_seconds = state["epoch"], state["history"], state["train_seconds"]
        set_rng_states(state["rng"])
    logger = RunLogger(cfg, run_dir, info.is_main, history)
    model = distiller
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            distiller, device_ids=[device.index] if device.type == "cuda" else None
        )
    if info.is_main:
        print(
            f"[makd] run {run_dir} | {data.num_classes} classes, {num_aspects} aspects | train {len(data.train)} "
            f"val {len(data.val) if data.val is not None else 0} test {len(data.test)} | {cfg.DISTILLER.STUDENT} "
            f"{cfg.DISTILLER.TYPE} | {device} x{info.world_size}",
            flush=True,
        )

    global_step = start_epoch * len(train_loader)
    try:
        for epoch in range(start_epoch, cfg.SOLVER.EPOCHS):
            seed = epoch_seed(cfg.SEED, epoch, info.rank)
            seed_everything(seed)
            loader_generator.manual_seed(seed)
            train_loader.sampler.set_epoch(epoch)
            train_loader.dataset.set_epoch(epoch)
            stats, global_step = train_one_epoch(
                model, train_loader, optimizer, scheduler, device, epoch, cfg, logger, info, global_step, amp
            )
            train_seconds += stats["epoch_seconds"]
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **stats}
            is_last = epoch + 1 == cfg.SOLVER.EPOCHS
            if (epoch + 1) % max(1, cfg.LOG.EVAL_FREQ) == 0 or is_last:
                for split, loader in eval_loaders.items():
                    for key, value in evaluate(distiller.student, loader, data.num_classes, device, info).items():
                        row[f"{split}_{key}"] = value
            history.append(row)
            _end_of_epoch(cfg, run_dir, info, distiller, optimizer, scheduler, amp, history, train_seconds, data)
            logger.epoch(row, global_step)
            if info.is_main:
                print(_epoch_line(cfg, row, history), flush=True)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and not is_last:
                if info.is_main:
                    print(f"[makd] stopped after epoch {epoch + 1} as asked; continue with --resume", flush=True)
                return None
    finally:
        logger.close()

    summary = _summary(cfg, data, history, info, train_seconds)
    if info.is_main:
        _export_student(run_dir / "student.pth", distiller.student, cfg, data)
        atomic_write_json(run_dir / "summary.json", summary)
        print(
            "[makd] summary "
            + json.dumps({k: summary[k] for k in ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last")}),
            flush=True,
        )
    barrier(info)
    return summary


def _end_of_epoch(
    cfg, run_dir: Path, info: DistInfo, distiller, optimizer, scheduler, amp, history, train_seconds, data
):
    """Save latest (every epoch), best (when the selection metric improves), epoch_<n> (every SAVE_CHECKPOINT_FREQ)."""
    if not info.is_main:
        return
    epoch = history[-1]["epoch"]
    state = {
        "model": distiller.student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "history": history,
        "scaler": amp.scaler.state_dict(),
        "rng": rng_states(),
        "config": cfg.dump(),
        "train_seconds": train_seconds,
        "num_classes": data.num_classes,
        "num_aspects": distiller.num_aspects,
        "student": cfg.DISTILLER.STUDENT,
        "class_names": data.class_names,
    }
    save_checkpoint(run_dir / "latest.pth", state)
    if _best_epochs(history).get("best_epoch") == epoch:
        shutil.copyfile(run_dir / "latest.pth", run_dir / "best.pth")
    if cfg.LOG.SAVE_CHECKPOINT_FREQ and epoch % cfg.LOG.SAVE_CHECKPOINT_FREQ == 0:
        shutil.copyfile(run_dir / "latest.pth", run_dir / f"epoch_{epoch}.pth")


def _epoch_line(cfg, row: dict, history: list[dict]) -> str:
    parts = [f"epoch {row['epoch']}/{cfg.SOLVER.EPOCHS}", f"lr {row['lr']:.2e}", f"loss {row['train_loss']:.4f}"]
    named = [f"{k[11:]} {v:.4f}" for k, v in row.items() if k.startswith("train_loss_")]
    if named:
        parts[-1] += f" ({', '.join(named)})"
    parts.append(f"train top1 (augmented) {row['train_top1']:.2f}")
    for split in ("val", "test"):
        if f"{split}_top1" in row:
            parts.append(f"{split} top1 {row[f'{split}_top1']:.2f} top5 {row[f'{split}_top5']:.2f}")
    if "test_aspect_mae" in row:
        parts.append(f"aspect mae {row['test_aspect_mae']:.3f} auc {row['test_aspect_auc']:.3f}")
    best = _best_epochs(history)
    if best:
        parts.append(f"best@{best['best_epoch']}")
    parts.append(f"{row['epoch_seconds']:.1f}s ({row['train_images_per_s']:.0f} img/s)")
    return " | ".join(parts)


def evaluate_checkpoint(config_path: str, checkpoint_path: str, opts=(), split: str = "test") -> dict[str, Any]:
    """Score a saved student (training checkpoint or student export) on the configured split."""
    from makd.engine.checkpoint import student_state_dict

    cfg = load_cfg(config_path, opts)
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
    student = build_student(state.get("student", cfg.DISTILLER.STUDENT), num_outputs).to(device)
    student.load_state_dict(weights)
    dataset = {"test": data.test, "val": data.val, "train": data.train.with_transform(data.test.transform)}[split]
    if dataset is None:
        raise ConfigError(f"split {split!r} does not exist (set DATASET.VAL_FRACTION for a validation split)")
    loader = make_eval_loader(
        dataset, cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.NUM_WORKERS, info, device.type == "cuda"
    )
    result = evaluate(student, loader, data.num_classes, device, info)
    return {"split": split, "checkpoint": str(checkpoint_path), **result}
