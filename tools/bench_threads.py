"""Benchmark the thread count: torch's default vs 1 thread vs makd's automatic choice, on this machine as it is now.

Each setting runs the real commands in fresh processes, as a user runs them (OMP_NUM_THREADS removed from their
environment, so the automatic choice measures the machine), rounds alternating the settings so that a change of
load hits all of them:
- train: `tools/our_train.py configs/demo/makd.yaml` on a small generated demo set (resnet20, 32 px), NUM_THREADS
  <torch's default> / 1 / 0 (auto); the img/s of the last epoch from metrics.jsonl;
- extract: stage 2 with `--model tiny` on generated images, --threads <torch's default> / 1 / 0 (auto); images/s
  from the sidecar.
Wall and CPU seconds (the child process and its children) per run; the load average before and after.
  python tools/bench_threads.py                      # both, 2 rounds
  python tools/bench_threads.py --what train --rounds 3
"""

from __future__ import annotations

import argparse
import json
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

import torch  # noqa: E402

from makd.demo.classification import generate_demo  # noqa: E402


def child_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["MAKD_CACHE_DIR"] = str(cache)
    return env


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the process and its children, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return wall, cpu, result


def bench_train(work: Path, settings: dict[str, int], rounds: int, epochs: int, env: dict[str, str]) -> dict:
    data = work / "demo"
    generate_demo(data, train_per_class=40, test_per_class=5)
    rows: dict[str, list[dict]] = {name: [] for name in settings}
    for round_index in range(rounds):
        for name, threads in settings.items():
            run = work / f"train_{name}_{round_index}"
            command = [sys.executable, str(ROOT / "tools" / "our_train.py"), str(ROOT / "configs/demo/makd.yaml"),
                       "DATASET.TRAIN_IMAGE_PATH", str(data / "train"), "DATASET.TEST_IMAGE_PATH", str(data / "test"),
                       "DATASET.ASPECT_JSON", str(data / "aspects_train.json"), "DATASET.TEST_ASPECT_JSON",
                       str(data / "aspects_test.json"), "DATASET.QUESTIONS", str(data / "questions.txt"),
                       "DISTILLER.STUDENT", "resnet20", "SOLVER.EPOCHS", str(epochs), "NUM_THREADS", str(threads),
                       "OUTPUT_DIR", str(run)]  # fmt: skip
            wall, cpu, _ = timed(command, env, work)
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            rows[name].append({"rate": metrics[-1]["train_images_per_s"], "wall": wall, "cpu": cpu,
                               "threads": metrics[-1]["num_threads"]})  # fmt: skip
            print(f"  train {name:>22}: {rows[name][-1]['rate']:7.1f} img/s (last epoch), {wall:6.1f} s wall, "
                  f"{cpu:6.1f} s CPU, {rows[name][-1]['threads']} thread(s)", flush=True)
    return rows


def bench_extract(work: Path, settings: dict[str, int], rounds: int, images: int, env: dict[str, str]) -> dict:
    import numpy as np
    from PIL import Image

    folder = work / "images" / "x"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    questions = work / "questions.txt"
    questions.write_text("".join(f"Is there a {w} in the image?\n" for w in ("tree", "car", "bird", "boat", "cat",
                                                                            "road", "lamp", "door")))  # fmt: skip
    stage2 = [sys.executable, str(ROOT / "InternVL_logits" / "make_makd_logits_json.py"), "--model", "tiny",
              "--questions", str(questions), "--images", str(work / "images"), "--no-progress", "--max-tiles", "6"]
    timed([*stage2, "--output", str(work / "warm.json"), "--limit", "1"], env, work)  # builds the cached model
    rows: dict[str, list[dict]] = {name: [] for name in settings}
    for round_index in range(rounds):
        for name, threads in settings.items():
            out = work / f"extract_{name}_{round_index}.json"
            wall, cpu, _ = timed([*stage2, "--output", str(out), "--threads", str(threads)], env, work)
            meta = json.loads(Path(str(out) + ".meta.json").read_text())
            rows[name].append({"rate": meta["images_per_second_this_run"], "wall": wall, "cpu": cpu})
            print(f"  extract {name:>20}: {rows[name][-1]['rate']:7.2f} images/s, {wall:6.1f} s wall, "
                  f"{cpu:6.1f} s CPU", flush=True)
    return rows


def summary(what: str, rows: dict, unit: str) -> None:
    print(f"{what}: median over rounds (rate {unit}, wall s, CPU s)")
    base = None
    for name, runs in rows.items():
        rate = statistics.median(r["rate"] for r in runs)
        base = base or rate
        print(f"  {name:>24}: {rate:8.2f} {unit}  {statistics.median(r['wall'] for r in runs):6.1f} s wall  "
              f"{statistics.median(r['cpu'] for r in runs):6.1f} s CPU  ({rate / base:.2f}x the first)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_threads.py", description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("both", "train", "extract"), default="both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="train: epochs per run (the last is timed)")
    parser.add_argument("--images", type=int, default=24, help="extract: images per run")
    args = parser.parse_args(argv)
    default = torch.get_num_threads() if "OMP_NUM_THREADS" not in os.environ else os.cpu_count() or 1
    settings = {f"torch default ({default})": default, "1 thread": 1, "auto (0, the default)": 0}
    print(f"{os.cpu_count()} logical cores, affinity {len(os.sched_getaffinity(0))}; load average "
          f"{os.getloadavg()[0]:.2f} at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        work = Path(tmp)
        env = child_env(work / "cache")
        if args.what in ("both", "train"):
            train = bench_train(work, settings, args.rounds, args.epochs, env)
        if args.what in ("both", "extract"):
            extract = bench_extract(work, settings, args.rounds, args.images, env)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.what in ("both", "train"):
        summary("train (resnet20, 32 px, demo set)", train, "img/s")
    if args.what in ("both", "extract"):
        summary("extract (tiny InternVL, 8 questions)", extract, "images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
