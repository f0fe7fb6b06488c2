"""tools/gpu_check.py, section stage3: the training input pipeline and step on the GPU (docs/gpu.md, "Stage 3").

A folder of generated JPEG photos (500x375, the release layout, a random aspect file with Q = 50) is trained on by
the real trainer (`makd.engine.trainer.train`, MaKD: CE + aspect BCE) with DATASET.CACHE_IMAGES (decoded and
pre-resized once) and DATASET.NUM_WORKERS -1, at 224 px, for resnet18 and resnet50 at batch 128 and 256, with AMP
and channels_last on; at resnet50 / 256 also with AMP off, channels_last off and SOLVER.COMPILE on. Per run:
- trainer img/s over its last epoch (an optimizer post-hook stamps every step: loading, copy, loss, logging);
- bare img/s: forward + loss + backward + SGD step with the same settings on one batch resident on the GPU;
- loader img/s: the trainer's own loader alone (workers, pinned memory, the device step), no model;
- GPU busy fraction: NVML's utilisation (the share of time a kernel ran), sampled every 50 ms over the last epoch;
- the verdict: input-bound when the loader delivers fewer images per second than the bare step consumes.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import statistics
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's makd, as every tool

from makd.formats.aspect_files import write_aspect_file  # noqa: E402

FULL = {"students": ["resnet18", "resnet50"], "batches": [128, 256], "train_images": 2560, "test_images": 64,
        "size": 224, "photo": (500, 375), "epochs": 2, "bare_steps": 20, "classes": 16}  # fmt: skip
SMOKE = {"students": ["resnet8"], "batches": [8], "train_images": 16, "test_images": 4, "size": 32, "photo": (48, 36),
         "epochs": 1, "bare_steps": 2, "classes": 4}  # fmt: skip
ASPECTS = 50
BASE = {"amp": True, "channels_last": True, "compile": False}
# Settings changed one at a time at the last student and batch (on the CPU, AMP is off whatever the key says).
ABLATIONS = [("AMP off", {"amp": False}), ("channels_last off", {"channels_last": False}),
             ("compile", {"compile": True})]  # fmt: skip
SMOKE_ABLATIONS = ABLATIONS[1:2]


def write_photo(job: tuple[str, int, int, int]) -> None:
    from bench_data import photo  # smooth colour regions + noise: decodes like a photo

    path, width, height, seed = job
    photo(np.random.default_rng(seed), width, height).save(path, quality=90)


def write_dataset(root: Path, plan: dict) -> Path:
    """Release-layout JPEG folders, a random aspect file and a config; returns the config."""
    classes, (width, height) = plan["classes"], plan["photo"]
    jobs, ids = [], []
    for split, count in (("train", plan["train_images"]), ("test", plan["test_images"])):
        (root / split).mkdir(parents=True)
        for k in range(count):
            stem = f"class{k % classes}_{k % classes}_{k}"
            jobs.append((str(root / split / f"{stem}.jpg"), width, height, k + (0 if split == "train" else 10**6)))
            if split == "train":
                ids.append(stem)
    with Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(write_photo, jobs, chunksize=16)
    rng = np.random.default_rng(0)
    write_aspect_file(root / "aspects.json", {i: rng.uniform(0.05, 0.95, ASPECTS).round(4).tolist() for i in ids})
    config = root / "config.yaml"
    config.write_text(
        f"""DATASET:
  NUM_CLASS: {classes}
  IMAGE_SIZE: {plan["size"]}
  ASPECT_JSON: "{root / "aspects.json"}"
  TRAIN_IMAGE_PATH: "{root / "train"}"
  TEST_IMAGE_PATH: "{root / "test"}"
  CACHE_IMAGES: True
  CHECK_IMAGES: False
  NUM_WORKERS: -1
DISTILLER:
  TYPE: "MaKD"
SOLVER:
  TYPE: "SGD"
  LR: 0.01
  EPOCHS: {plan["epochs"]}
LOG:
  SAVE_CHECKPOINT_FREQ: 0
  TENSORBOARD_FREQ: 1000
"""
    )
    return config


class Utilisation:
    """NVML's GPU utilisation sampled every 50 ms in a thread: (time, percent) pairs (nothing without NVML)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.stop = device, [], threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.samples.append((time.perf_counter(), float(torch.cuda.utilization(self.device))))
            except Exception:  # noqa: BLE001 - no NVML binding (pynvml): the fraction stays unknown
                return

    def __enter__(self) -> Utilisation:
        if self.device.type == "cuda":
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def mean_between(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return round(statistics.fmean(inside) / 100, 3) if inside else None


def opts_of(student: str, batch: int, settings: dict, device: torch.device, root: Path, tag: str) -> list[str]:
    return ["DISTILLER.STUDENT", student, "SOLVER.BATCH_SIZE", str(batch), "DEVICE", device.type,
            "SOLVER.AMP", str(settings["amp"]), "DATASET.CHANNELS_LAST", str(settings["channels_last"]),
            "SOLVER.COMPILE", str(settings["compile"]), "OUTPUT_DIR", str(root / "runs" / tag)]  # fmt: skip


def trainer_rate(config: Path, opts: list[str], device: torch.device, batch: int) -> dict[str, Any]:
    """img/s of the real trainer over its last epoch, and the GPU busy fraction over the same window."""
    from bench_train import StepClock

    import makd.tasks  # noqa: F401  (every task joins the registry)
    from makd.config import load_cfg
    from makd.engine.trainer import train

    cfg = load_cfg(str(config), opts)
    clock = StepClock()
    started = time.perf_counter()
    try:
        with Utilisation(device) as utilisation, contextlib.redirect_stdout(io.StringIO()):
            summary = train(cfg)
    finally:
        clock.close()
    steps = len(clock.stamps) // cfg.SOLVER.EPOCHS
    window = clock.stamps[-steps:]  # the last epoch; its first step's own time is not counted
    seconds = window[-1][0] - window[0][0]
    return {"images_per_s": round((len(window) - 1) * batch / seconds, 1),
            "gpu_busy": utilisation.mean_between(window[0][0], window[-1][0]),
            "run_seconds": round(time.perf_counter() - started, 1), "steps_timed": len(window) - 1,
            "test_top1": summary.get("test_top1_last")}  # fmt: skip


def bare_rate(student: str, classes: int, size: int, batch: int, settings: dict, device: torch.device,
              steps: int) -> float:  # fmt: skip
    """img/s of forward + CE + aspect BCE + backward + SGD step on one resident batch, as the trainer's settings."""
    import torch.nn.functional as F

    from makd.config import get_cfg
    from makd.engine.trainer import MixedPrecision
    from makd.models import build_student

    family = "cifar" if size <= 64 else "imagenet"
    model = build_student(student, classes + ASPECTS, input_family=family).to(device).train()
    memory = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory)
    if settings["compile"]:
        model.compile()
    cfg = get_cfg()
    cfg.SOLVER.AMP = settings["amp"]
    amp = MixedPrecision(cfg, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, size, size, device=device, generator=generator).contiguous(memory_format=memory)
    labels = torch.randint(0, classes, (batch,), device=device, generator=generator)
    targets = torch.rand(batch, ASPECTS, device=device, generator=generator)

    def step() -> None:
        with amp.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits[:, :classes], labels)
            loss = loss + 4.0 * F.binary_cross_entropy_with_logits(logits[:, classes:].float(), targets)
        optimizer.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        amp.scaler.step(optimizer)
        amp.scaler.update()

    for _ in range(3):  # warm-up: cuDNN algorithm choice, compilation
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return round(steps * batch / (time.perf_counter() - start), 1)


def loader_rate(config: Path, opts: list[str], device: torch.device) -> dict[str, Any]:
    """img/s of the trainer's training loader alone (its workers, pinned memory, the device step), second epoch."""
    from makd.config import load_cfg
    from makd.data.build import build_data
    from makd.data.device_batch import prepare_batch
    from makd.data.loader_settings import worker_count
    from makd.engine.distributed import DistInfo
    from makd.engine.trainer import make_train_loader

    cfg = load_cfg(str(config), opts)
    data = build_data(cfg)
    loader, _ = make_train_loader(data.train, cfg, DistInfo(), pin_memory=device.type == "cuda")
    rates = []
    for epoch in range(2):  # the first epoch starts the persistent workers
        loader.sampler.set_epoch(epoch)
        data.train.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for batch in loader:
            seen += int(prepare_batch(batch, data.train, device)["image"].shape[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(seen / (time.perf_counter() - start))
    return {"images_per_s": round(rates[-1], 1), "workers": worker_count(cfg.DATASET.NUM_WORKERS)}


def run(record, device: torch.device, students: str | None = None) -> None:
    plan = dict(SMOKE if record.smoke else FULL)
    if students:
        plan["students"] = students.split(",")
    with TemporaryDirectory(prefix="gpu_check_stage3_") as tmp:
        root = Path(tmp)
        config = write_dataset(root, plan)
        record.set("dataset", {"train_images": plan["train_images"], "photo": list(plan["photo"]), "size": plan["size"],
                               "format": "jpg", "cache_images": True})  # fmt: skip
        last_student, last_batch = plan["students"][-1], plan["batches"][-1]
        runs = [(s, b, "base", BASE) for s in plan["students"] for b in plan["batches"]]
        runs += [(last_student, last_batch, label, {**BASE, **change})
                 for label, change in (SMOKE_ABLATIONS if record.smoke else ABLATIONS)]  # fmt: skip
        loaders: dict[int, dict] = {}
        for student, batch, label, settings in runs:
            needs = 90 if settings["compile"] else 20
            if not record.fits(needs):
                record.skip(f"{student} batch {batch} {label}", needs)
                continue
            tag = f"{student}_{batch}_{label.replace(' ', '_')}"
            opts = opts_of(student, batch, settings, device, root, tag) + (["NUM_THREADS", "1"] if record.smoke else [])
            entry: dict[str, Any] = {"student": student, "batch": batch, "variant": label, **settings}
            if device.type != "cuda":
                entry["amp"] = False  # SOLVER.AMP is ignored on the CPU
            entry["trainer"] = trainer_rate(config, opts, device, batch)
            entry["bare_images_per_s"] = bare_rate(student, plan["classes"], plan["size"], batch, settings, device,
                                                   plan["bare_steps"])  # fmt: skip
            if batch not in loaders:
                loaders[batch] = loader_rate(config, opts, device)
            entry["loader"] = loaders[batch]
            trainer, bare = entry["trainer"]["images_per_s"], entry["bare_images_per_s"]
            supply = loaders[batch]["images_per_s"]
            entry["trainer_over_bare"] = round(trainer / bare, 3)
            entry["verdict"] = "input-bound" if supply < bare else "not input-bound"
            record.append("runs", entry)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def markdown(result: dict) -> list[str]:
    runs = result.get("runs") or []
    if not runs:
        return []
    data = result.get("dataset", {})
    lines = ["", f"## Stage 3 input pipeline and step ({data.get('train_images')} JPEG photos, {data.get('size')} px, "
                 f"cached, NUM_WORKERS -1 -> {runs[0]['loader']['workers']} workers)", "",
             "| student | batch | variant | AMP | channels_last | compile | trainer img/s | bare img/s "
             "| trainer / bare | loader img/s | GPU busy | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in runs:
        busy = r["trainer"]["gpu_busy"]
        cells = [r["student"], r["batch"], r["variant"], r["amp"], r["channels_last"], r["compile"],
                 r["trainer"]["images_per_s"], r["bare_images_per_s"], r["trainer_over_bare"],
                 r["loader"]["images_per_s"], "-" if busy is None else f"{100 * busy:.0f} %", r["verdict"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines
