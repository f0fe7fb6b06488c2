"""Benchmark stage 3: the trainer's img/s vs a bare forward + backward + SGD step loop, and start-up time.

Ratio (default): a synthetic dataset in the official release layout (flat PNG folder, random aspect file) is
written to a temporary folder; the real trainer (`makd.engine.trainer.train`, MaKD: CE + aspect BCE) runs
--epochs epochs on it, and the last epoch's steps are timed (an optimizer post-hook stamps every step, so the
window holds data loading, transfer, loss, logging: everything the trainer does per step). The bare loop runs
the same student, loss and optimizer on one fixed batch of tensors (no loader). Rounds alternate bare / trainer
/ bare so load on a shared machine hits both; wall and process CPU time are printed, and the ratio of each.

Start-up (--startup): time from process spawn to the end of the first optimizer step of the real command
(`tools/our_train.py` with a CIFAR student) vs `python -c "import torch, torchvision"`, median of --repeats
interleaved runs. Examples:
  python tools/bench_train.py --student resnet20 --size 32 --batch 64
  python tools/bench_train.py --startup
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from makd.models import build_student  # noqa: E402


def write_dataset(root: Path, classes: int, per_class: int, test_per_class: int, size: int, aspects: int) -> Path:
    """Release-layout train/test PNG folders + aspect file + a config; returns the config path."""
    from PIL import Image

    from makd.formats.aspect_files import write_aspect_file

    rng = np.random.default_rng(0)
    ids = []
    for split, count in (("train", per_class), ("test", test_per_class)):
        (root / split).mkdir(parents=True)
        for label in range(classes):
            for index in range(count):
                stem = f"class{label}_{label}_{index}"
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"{stem}.png")
                if split == "train":
                    ids.append(stem)
    write_aspect_file(root / "aspects.json", {i: rng.uniform(0.05, 0.95, aspects).round(4).tolist() for i in ids})
    config = root / "bench.yaml"
    config.write_text(
        f"""EXPERIMENT:
  PROJECT: "bench"
  NAME: "train"
DATASET:
  NUM_CLASS: {classes}
  IMAGE_SIZE: {size}
  RESIZE_RATIO: 1.0
  ASPECT_JSON: "{root / "aspects.json"}"
  TRAIN_IMAGE_PATH: "{root / "train"}"
  TEST_IMAGE_PATH: "{root / "test"}"
DISTILLER:
  TYPE: "MaKD"
SOLVER:
  TYPE: "SGD"
  LR: 0.01
  MOMENTUM: 0.9
  WEIGHT_DECAY: 0.0005
MaKD:
  ASPECT_NUM: {aspects}
LOG:
  PREFIX: "{root / "output"}"
  SAVE_CHECKPOINT_FREQ: 0
"""
    )
    return config


class StepClock:
    """(wall, CPU) stamps after every optimizer step of any optimizer in this process."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.handle = register_optimizer_step_post_hook(self._stamp)

    def _stamp(self, *_args) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))

    def close(self) -> None:
        self.handle.remove()


def trainer_round(config: Path, opts: list[str], epochs: int, steps_per_epoch: int, batch: int) -> tuple[float, float]:
    """(wall, CPU) img/s of the trainer over its last epoch (step stamps from the first to the last step of it)."""
    import makd.tasks  # noqa: F401  (every task joins makd.engine.tasks.TASKS)
    from makd.config import load_cfg
    from makd.engine.trainer import train

    cfg = load_cfg(str(config), [*opts, "SOLVER.EPOCHS", str(epochs), "EXPERIMENT.NAME", f"t{time.time_ns()}"])
    clock = StepClock()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's own progress lines
            train(cfg)
    finally:
        clock.close()
    window = clock.stamps[-steps_per_epoch:]  # the last epoch; its first step's own time is not counted
    images = (len(window) - 1) * batch
    return images / (window[-1][0] - window[0][0]), images / (window[-1][1] - window[0][1])


def bare_round(model: torch.nn.Module, batch: dict, classes: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) img/s of forward + CE + aspect BCE + backward + SGD step on one fixed batch."""
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        logits = model(batch["image"])
        loss = F.cross_entropy(logits[:, :classes], batch["label"])
        loss = loss + 4.0 * F.binary_cross_entropy_with_logits(logits[:, classes:], batch["aspects"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    images = steps * batch["image"].shape[0]
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu)


def eval_round(model: torch.nn.Module, size: int, batch: int, context, device: torch.device, steps: int = 4) -> float:
    """CPU img/s of eval-mode forwards on fixed tensors under `context` (torch.no_grad or torch.inference_mode)."""
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    model.eval()
    with context():
        model(images)  # warm-up at this shape
        cpu = time.process_time()
        for _ in range(steps):
            model(images)
        cpu = time.process_time() - cpu
    model.train()
    return steps * batch / cpu


def ratio_main(args) -> int:
    steps = args.steps
    if steps < 2 or (steps * args.batch) % args.classes:
        raise SystemExit(f"error: --steps x --batch ({steps * args.batch}) must be a multiple of --classes and "
                         "--steps >= 2 (every epoch is exactly --steps full batches)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="makd_bench_train_") as tmp:
        config = write_dataset(Path(tmp), args.classes, steps * args.batch // args.classes, 2, args.size, args.aspects)
        opts = ["DISTILLER.STUDENT", args.student, "SOLVER.BATCH_SIZE", str(args.batch), "DATASET.NUM_WORKERS",
                str(args.workers), "DATASET.CACHE_IMAGES", str(args.cache), "DEVICE", args.device]  # fmt: skip
        device = torch.device(args.device)
        family = "cifar" if args.size <= 64 else "imagenet"
        model = build_student(args.student, args.classes + args.aspects, input_family=family).to(device)
        g = torch.Generator().manual_seed(0)
        batch = {
            "image": torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
            "label": torch.randint(0, args.classes, (args.batch,), generator=g).to(device),
            "aspects": torch.rand(args.batch, args.aspects, generator=g).to(device),
        }
        bare_round(model, batch, args.classes, 2)  # warm-up
        bare, trainer = [], []
        for _ in range(args.rounds):
            bare.append(bare_round(model, batch, args.classes, steps))
            trainer.append(trainer_round(config, opts, args.epochs, steps, args.batch))
        bare.append(bare_round(model, batch, args.classes, steps))
    print(f"device: {device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} logical cores")
    print(
        f"student {args.student}, {args.size} px, batch {args.batch}, {steps} steps per epoch, "
        f"{args.workers} loader workers, cache {args.cache}, {args.rounds} trainer rounds of {args.epochs} epochs"
    )
    for name, rows in (("trainer (last epoch)", trainer), ("bare loop on fixed tensors", bare)):
        wall, cpu = (statistics.median(r[i] for r in rows) for i in (0, 1))
        print(
            f"{name:28s} {wall:9.1f} img/s wall  {cpu:9.1f} img/s CPU   (rounds: "
            + ", ".join(f"{r[0]:.0f}/{r[1]:.0f}" for r in rows)
            + " wall/CPU)"
        )
    ratio_wall = statistics.median(r[0] for r in bare) / statistics.median(r[0] for r in trainer)
    ratio_cpu = statistics.median(r[1] for r in bare) / statistics.median(r[1] for r in trainer)
    train_cpu = statistics.median(r[1] for r in bare)
    for label, context in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        for size in (args.batch, 4 * args.batch):
            cpu = eval_round(model, args.size, size, context, device)
            print(f"evaluation forward, {label:14s} batch {size:4d}: {cpu:9.1f} img/s CPU = "
                  f"{train_cpu / cpu:.2f}x a bare training step per image")  # fmt: skip
    print(
        f"bare / trainer img/s: {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU (1.00 = the trainer adds nothing; "
        "CPU time excludes loader worker processes, wall time includes waiting for them)"
    )
    return 0


# Exits the process at the end of the first optimizer step of the real command, printing how long it took.
FIRST_STEP_PROBE = """
import os, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
def first_step(*_):
    sys.stdout.write("FIRST_STEP\\n"); sys.stdout.flush(); os._exit(0)
register_optimizer_step_post_hook(first_step)
sys.argv = ["our_train.py", *sys.argv[1:]]
from makd.commands.train import train_main
sys.exit(train_main(sys.argv[1:]))
"""


def spawn_seconds(argv: list[str], expect: str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of running `argv` from spawn to exit (checks its output holds `expect`).

    CPU = the child's user + system time (all its threads), which a loaded machine distorts far less than wall.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0 or (expect and expect not in out.stdout):
        raise SystemExit(f"error: {' '.join(argv[:3])} ... failed: {out.stderr.strip().splitlines()[-1:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# The least a process can do to reach a first step: the same imports, the student, one step on fixed tensors.
BARE_FIRST_STEP = """
import sys
import torch, torchvision
import torch.nn.functional as F
from makd.models import build_student
model = build_student(sys.argv[1], 60, input_family="cifar")
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
F.cross_entropy(model(torch.randn(16, 3, 32, 32))[:, :10], torch.zeros(16, dtype=torch.long)).backward()
optimizer.step()
import os
print("FIRST_STEP", flush=True)
os._exit(0)  # as the trainer probe: no interpreter teardown
"""


def startup_main(args) -> int:
    with tempfile.TemporaryDirectory(prefix="makd_bench_startup_") as tmp:
        config = write_dataset(Path(tmp), 10, 8, 2, 32, 50)
        command = [sys.executable, "-c", FIRST_STEP_PROBE, str(config), "DISTILLER.STUDENT", args.student,
                   "SOLVER.BATCH_SIZE", "16", "DATASET.NUM_WORKERS", "0", "DEVICE", args.device]  # fmt: skip
        commands = {
            "python -c 'import torch, torchvision'": ([sys.executable, "-c", "import torch, torchvision"], None),
            "the same, ending with os._exit(0) (no teardown, as the probes below)": (
                [sys.executable, "-c", "import os, torch, torchvision; os._exit(0)"], None),
            f"bare process: imports + {args.student} + one step": (
                [sys.executable, "-c", BARE_FIRST_STEP, args.student], "FIRST_STEP"),
            f"our_train.py to the end of its first step ({args.student}, 80 images of 32 px)": (command, "FIRST_STEP"),
        }  # fmt: skip
        for argv, expect in commands.values():
            spawn_seconds(argv, expect)  # warm the file cache
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved, so load changes hit all alike
            for name, (argv, expect) in commands.items():
                times[name].append(spawn_seconds(argv, expect))
    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:75s} {wall[name]:6.2f} s wall {cpu[name]:6.2f} s CPU  (runs, CPU: "
              f"{', '.join(f'{c:.2f}' for _, c in t)})")  # fmt: skip
    for label, m in (("CPU", cpu), ("wall", wall)):
        imports, no_teardown, bare, trainer = m.values()
        print(f"{label:4s}: start-up to the first step / imports {trainer / imports:.2f}x "
              f"({trainer / no_teardown:.2f}x without teardown); / bare first step {trainer / bare:.2f}x; "
              f"bare first step / imports without teardown {bare / no_teardown:.2f}x")  # fmt: skip
    print(f"(spawn to exit, median of {args.repeats} interleaved runs; CPU = the child's user + system time)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="resnet20")
    p.add_argument("--size", type=int, default=32, help="image side in px")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--aspects", type=int, default=50, help="Q")
    p.add_argument("--steps", type=int, default=8, help="steps per trainer epoch (sets the dataset size)")
    p.add_argument("--epochs", type=int, default=2, help="trainer epochs per round; the last one is timed")
    p.add_argument("--rounds", type=int, default=2, help="trainer rounds (bare rounds: one more)")
    p.add_argument("--workers", type=int, default=0, help="DATASET.NUM_WORKERS")
    p.add_argument("--cache", action="store_true", help="DATASET.CACHE_IMAGES True")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--startup", action="store_true", help="measure start-up to the first step instead")
    p.add_argument("--repeats", type=int, default=3, help="--startup: interleaved runs of each (median)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return startup_main(args) if args.startup else ratio_main(args)


if __name__ == "__main__":
    sys.exit(main())
