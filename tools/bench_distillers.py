"""Benchmark the cost of each distillation method: time per training step relative to cross-entropy (NONE).

One process builds every method around the same student (same seed) and frozen teacher, through the registry and
the trainer's optimizer and backward pass (so "KD+DOT" runs DOT's two passes), and times full steps on the same
synthetic batches, alternating the methods round by round so that machine load hits them alike. Prints per method
the median wall and process-CPU ms per step and both ratios to NONE, and the teacher's forward alone. Data loading is
not timed: a method's own augmentation (MLKD's strong view, RandAugment on the CPU) shows in a study's epoch times.
Examples:
  python tools/bench_distillers.py --student resnet8x4 --teacher resnet32x4 --batch 64 --size 32
  python tools/bench_distillers.py --student resnet20 --teacher resnet56 --classes 16 --threads 1 \\
      --methods NONE,KD,KD+DOT,DKD,MLKD,FITNET,AT,SP,VID,RKD,PKT,NST,KDSVD,OFD,CRD,REVIEWKD,MaKD CRD.NCE.K 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from makd.config import load_cfg  # noqa: E402
from makd.distillers import build_distiller, distiller_class  # noqa: E402
from makd.engine.optim import backward, build_optimizer  # noqa: E402
from makd.models import build_student  # noqa: E402
from makd.models.teacher import ClassLogitsTeacher  # noqa: E402

DEFAULT_METHODS = "NONE,KD"
METHOD_OVERRIDES = {"CRD": ["CRD.NCE.K", "4096"]}  # mdistiller's 16384 negatives exceed a benchmark's images


def method_settings(spec: str, size: int, opts: list[str] = ()) -> list[str]:
    """KEY VALUE overrides of one method spec: "KD", "KD+DOT" (SOLVER.TRAINER dot), "MaKD_AT", ...; `opts` last."""
    name, _, trainer = spec.partition("+")
    settings = ["DISTILLER.TYPE", name, "DATASET.IMAGE_SIZE", str(size), *METHOD_OVERRIDES.get(name.upper(), [])]
    return settings + (["SOLVER.TRAINER", trainer.lower()] if trainer else []) + list(opts)


def time_steps(distiller, optimizer, batches: list[dict], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds per optimizer step over `batches`. CPU time is what a loaded machine
    distorts least: other jobs stretch the wall clock, not this process's own compute."""
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    distiller.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in batches:
        _, losses = distiller(batch)
        optimizer.zero_grad(set_to_none=True)
        backward(optimizer, losses, sum(losses.values()), scaler)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(batches), (time.process_time() - cpu_start) / len(batches)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_distillers.py",
        description=__doc__.splitlines()[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated DISTILLER.TYPEs, +DOT for DOT")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--family", default="cifar", choices=("cifar", "imagenet"), help="model table of the names")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--aspects", type=int, default=16, help="Q of the MaKD methods")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input side in pixels")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all methods (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "opts", nargs="*", metavar="KEY VALUE", help="config overrides for every method (CRD.NCE.K 256)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    torch.manual_seed(0)
    n = args.batch * args.steps
    batches = []
    for step in range(args.steps):
        image = torch.randn(args.batch, 3, args.size, args.size, device=device)
        batches.append(
            {
                "image": image,
                "image_strong": torch.flip(image, dims=[3]) + 0.1 * torch.randn_like(image),  # a second view
                "label": torch.randint(0, args.classes, (args.batch,), device=device),
                "index": torch.arange(step * args.batch, (step + 1) * args.batch, device=device),
                "aspects": torch.rand(args.batch, args.aspects, device=device),
                "aspect_mask": torch.ones(args.batch, args.aspects, device=device),
            }
        )
    labels = [int(v) for b in batches for v in b["label"]]
    torch.manual_seed(1)
    teacher = ClassLogitsTeacher(build_student(args.teacher, args.classes, input_family=args.family), args.classes)
    teacher = teacher.to(device).eval().requires_grad_(False)
    runs = {}
    for spec in methods:
        cfg = load_cfg(None, method_settings(spec, args.size, args.opts))
        method = distiller_class(cfg.DISTILLER.TYPE)
        q = args.aspects if method.needs_aspects else 0
        torch.manual_seed(1)
        student = build_student(args.student, method.head_outputs(args.classes, q), input_family=args.family)
        distiller = build_distiller(
            cfg, student, args.classes, q, teacher if method.needs_teacher else None, train_labels=labels
        ).to(device)
        runs[spec] = (distiller, build_optimizer(cfg, distiller))
        time_steps(*runs[spec], batches[:1], device)  # warm-up (allocator, kernels, CRD's normalisers)
    times: dict[str, list[tuple[float, float]]] = {spec: [] for spec in methods}
    teacher_times = []
    for _ in range(args.rounds):
        for spec in methods:
            times[spec].append(time_steps(*runs[spec], batches, device))
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for batch in batches:
                teacher(batch["image"])
        teacher_times.append(
            ((time.perf_counter() - start) / args.steps, (time.process_time() - cpu_start) / args.steps)
        )

    def median_ms(values: list[tuple[float, float]], which: int) -> float:
        return 1000 * statistics.median(v[which] for v in values)

    params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print(
        f"student {args.student} ({params(build_student(args.student, args.classes, input_family=args.family)):.2f} M "
        f"params), teacher {args.teacher} ({params(teacher):.2f} M), batch {args.batch} x {args.size} px, "
        f"{args.classes} classes, {n} images, {device}, {torch.get_num_threads()} threads, median of {args.rounds} "
        f"rounds x {args.steps} steps"
    )
    reference = methods[0]
    print(f"| method | wall ms/step | CPU ms/step | wall / {reference} | CPU / {reference} |")
    print("|---|---|---|---|---|")
    for spec in methods:
        wall, cpu = median_ms(times[spec], 0), median_ms(times[spec], 1)
        ratio_wall = wall / median_ms(times[reference], 0)
        ratio_cpu = cpu / median_ms(times[reference], 1)
        print(f"| {spec} | {wall:.1f} | {cpu:.1f} | {ratio_wall:.2f} | {ratio_cpu:.2f} |")
    print(
        f"| teacher forward alone | {median_ms(teacher_times, 0):.1f} | {median_ms(teacher_times, 1):.1f} | "
        f"{median_ms(teacher_times, 0) / median_ms(times[reference], 0):.2f} | "
        f"{median_ms(teacher_times, 1) / median_ms(times[reference], 1):.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
