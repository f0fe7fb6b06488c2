"""Benchmark the KD family's teacher overhead: time per training step of KD vs NONE on the same student.

One process builds the student twice (same seed), a frozen teacher, and times full optimizer steps (forward,
backward, SGD step) on the same synthetic batches, alternating NONE and KD rounds so that machine load hits
both alike. Prints the median ms per step of each, the KD / NONE ratio, and the teacher's forward alone.
Example:
  python tools/bench_distillers.py --student resnet8x4 --teacher resnet32x4 --batch 64 --size 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from makd.distillers.ce import CrossEntropyBaseline  # noqa: E402
from makd.distillers.kd import KnowledgeDistiller  # noqa: E402
from makd.models import build_student  # noqa: E402
from makd.models.teacher import ClassLogitsTeacher  # noqa: E402


def time_steps(distiller, batches: list[dict], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds per optimizer step over `batches`. CPU time is what a loaded machine
    distorts least: other jobs stretch the wall clock, not this process's own compute."""
    optimizer = torch.optim.SGD(list(distiller.learnable_parameters()), lr=0.01, momentum=0.9)
    distiller.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in batches:
        _, losses = distiller(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
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
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input side in pixels")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating NONE / KD rounds (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches = [
        {
            "image": torch.randn(args.batch, 3, args.size, args.size, device=device),
            "label": torch.randint(0, args.classes, (args.batch,), device=device),
        }
        for _ in range(args.steps)
    ]
    torch.manual_seed(1)
    baseline = CrossEntropyBaseline(build_student(args.student, args.classes), args.classes).to(device)
    torch.manual_seed(1)
    teacher = ClassLogitsTeacher(build_student(args.teacher, args.classes), args.classes)
    kd = KnowledgeDistiller(build_student(args.student, args.classes), args.classes, teacher).to(device)
    time_steps(baseline, batches[:1], device)  # warm-up (allocator, kernels)
    time_steps(kd, batches[:1], device)
    none_times, kd_times, teacher_times = [], [], []
    for _ in range(args.rounds):
        none_times.append(time_steps(baseline, batches, device))
        kd_times.append(time_steps(kd, batches, device))
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for batch in batches:
                kd.teacher_logits(batch)
        n = len(batches)
        teacher_times.append(((time.perf_counter() - start) / n, (time.process_time() - cpu_start) / n))

    def median_ms(times: list[tuple[float, float]], which: int) -> float:
        return 1000 * statistics.median(t[which] for t in times)

    params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print(
        f"student {args.student} ({params(baseline.student):.2f} M params), teacher {args.teacher} "
        f"({params(teacher):.2f} M), batch {args.batch} x {args.size} px, {args.classes} classes, {device}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds x {args.steps} steps"
    )
    for which, clock in ((0, "wall"), (1, "process CPU")):
        none_ms, kd_ms = median_ms(none_times, which), median_ms(kd_times, which)
        print(
            f"{clock:>11}: NONE {none_ms:8.1f} ms/step | KD {kd_ms:8.1f} ms/step | teacher forward alone "
            f"{median_ms(teacher_times, which):7.1f} ms/step | ratio KD / NONE = {kd_ms / none_ms:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
