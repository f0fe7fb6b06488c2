"""The built-in demo (what `make demo` runs): synthetic data -> CE baseline and MaKD students -> a table.

    python tools/demo.py                       # generate data/demo if missing, train both, print the table
    python tools/demo.py --epochs 5 SEED 1     # fewer epochs, any KEY VALUE config overrides
    python tools/demo.py --runs baseline,makd,random --seeds 0,1,2   # add the random-targets control
    python tools/demo.py --runs baseline,makd,kd,makd_kd             # the KD family, with a CNN teacher

Runs: baseline (configs/demo/baseline.yaml), makd (configs/demo/makd.yaml), random (makd with
MaKD.TARGETS random: the paper's control), oracle (makd trained on the true 0/1 answers instead of
the simulated teacher), kd (configs/demo/kd.yaml) and makd_kd (configs/demo/makd_kd.yaml). kd and makd_kd
need a CNN teacher: the demo trains it first with the same command (configs/demo/teacher.yaml, cross-entropy
only) into <out>/teacher and reuses it on later calls while its resolved config is unchanged. See docs/demo.md
and docs/methods.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from makd.artifacts import atomic_write_json  # noqa: E402
from makd.config import load_cfg  # noqa: E402
from makd.data.demo import generate_demo, read_demo_summary  # noqa: E402
from makd.engine.cli import train_main  # noqa: E402

CONFIG_DIR = REPO / "configs" / "demo"
RUNS = ("baseline", "makd", "random", "oracle", "kd", "makd_kd")
TEACHER_RUNS = ("kd", "makd_kd")  # runs distilling from the demo's CNN teacher
RUN_CONFIGS = {"baseline": "baseline.yaml", "kd": "kd.yaml", "makd_kd": "makd_kd.yaml"}  # others: makd.yaml


class DemoError(RuntimeError):
    """The demo cannot go on (bad data folder, a failed training run)."""


def run_argv(
    run: str,
    data_dir: Path,
    run_dir: Path,
    epochs: int | None,
    seed: int,
    overrides: Sequence[str],
    teacher_checkpoint: Path | None = None,
) -> list[str]:
    """tools/our_train.py arguments of one demo run (data paths always explicit, so any working folder works).

    run "teacher" is the CNN teacher of kd / makd_kd (configs/demo/teacher.yaml); those two take its student.pth.
    """
    if run not in RUNS and run != "teacher":
        raise DemoError(f"unknown demo run {run!r}; use some of {', '.join(RUNS)} (comma separated)")
    config = CONFIG_DIR / ("teacher.yaml" if run == "teacher" else RUN_CONFIGS.get(run, "makd.yaml"))
    truth = run == "oracle"
    argv = [
        str(config),
        "--overwrite",
        "OUTPUT_DIR",
        str(run_dir),
        "SEED",
        str(seed),
        "DATASET.TRAIN_IMAGE_PATH",
        str(data_dir / "train"),
        "DATASET.TEST_IMAGE_PATH",
        str(data_dir / "test"),
        "DATASET.QUESTIONS",
        str(data_dir / "questions.txt"),
        "DATASET.ASPECT_JSON",
        str(data_dir / ("truth_train.json" if truth else "aspects_train.json")),
        "DATASET.TEST_ASPECT_JSON",
        str(data_dir / ("truth_test.json" if truth else "aspects_test.json")),
    ]
    if run == "random":
        argv += ["MaKD.TARGETS", "random"]
    if run in TEACHER_RUNS:
        argv += ["DISTILLER.TEACHER_CHECKPOINT", str(teacher_checkpoint)]
    if epochs is not None:
        argv += ["SOLVER.EPOCHS", str(epochs)]
    return argv + list(overrides)


def ensure_data(data_dir: Path, regenerate: bool, generate_kwargs: dict) -> tuple[dict, float]:
    """The demo data's dataset.json (generating it when missing or asked); returns (summary, seconds spent)."""
    summary = None if regenerate else read_demo_summary(data_dir)
    if summary is not None:
        different = {k: (summary.get(k), v) for k, v in generate_kwargs.items() if summary.get(k) != v}
        if different:
            raise DemoError(
                f"{data_dir} was generated with other settings ({different}, as (found, asked)); "
                "pass --regenerate to rebuild it"
            )
        return summary, 0.0
    if data_dir.exists() and any(data_dir.iterdir()) and not regenerate:
        raise DemoError(
            f"{data_dir} exists but holds no complete demo (no dataset.json); pass --regenerate "
            "to replace it or --data to use another folder"
        )
    start = time.perf_counter()
    summary = generate_demo(data_dir, overwrite=True, **generate_kwargs)
    return summary, time.perf_counter() - start


def ensure_teacher(
    data_dir: Path, output_dir: Path, epochs: int | None, overrides: Sequence[str], log: Callable[[str], None]
) -> tuple[dict, float]:
    """Train the demo's CNN teacher into `output_dir`/teacher unless a finished one with the same resolved config
    is there; returns (its summary.json, seconds spent training: 0 when reused)."""
    teacher_dir = output_dir / "teacher"
    argv = run_argv("teacher", data_dir, teacher_dir, epochs, 0, overrides)  # seed 0: one teacher for all seeds
    wanted = load_cfg(argv[0], argv[2:]).dump()
    done = teacher_dir / "summary.json"
    if done.is_file() and (teacher_dir / "student.pth").is_file() and (teacher_dir / "config.yaml").is_file():
        if (teacher_dir / "config.yaml").read_text(encoding="utf-8") == wanted:
            log(f"[demo] teacher {teacher_dir} already trained with this config: reused")
            return json.loads(done.read_text(encoding="utf-8")), 0.0
        log(f"[demo] teacher {teacher_dir} was trained with another config: training it again")
    log(f"[demo] training the CNN teacher: python tools/our_train.py {' '.join(argv)}")
    start = time.perf_counter()
    if train_main(argv) != 0:
        raise DemoError("training the demo teacher failed (its error is printed above)")
    return json.loads(done.read_text(encoding="utf-8")), time.perf_counter() - start


def run_demo(
    *,
    data_dir: str | os.PathLike = "data/demo",
    output_dir: str | os.PathLike = "output/demo",
    runs: Sequence[str] = ("baseline", "makd"),
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    regenerate: bool = False,
    generate_kwargs: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Generate (when needed) and train every run x seed; returns {"rows": [...], "seconds": ..., ...}.

    Each row holds the run name and its summary.json values (test_top1_last/best in %, best_epoch,
    train_seconds) plus wall_seconds of the whole training command. The result is also written to
    `output_dir`/results.json.
    """
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    for run in runs:
        if run not in RUNS:
            raise DemoError(f"unknown demo run {run!r}; use some of {', '.join(RUNS)} (comma separated)")
    data, generate_seconds = ensure_data(data_dir, regenerate, dict(generate_kwargs or {}))
    log(
        f"[demo] data {data_dir}: {data['num_train']} train / {data['num_test']} test images, "
        f"{data['num_classes']} classes, {data['num_questions']} questions"
        + (f" (generated in {generate_seconds:.1f}s)" if generate_seconds else " (already there)")
    )
    rows = []
    if any(run in TEACHER_RUNS for run in runs):
        teacher, teacher_seconds = ensure_teacher(data_dir, output_dir, epochs, overrides, log)
        rows.append({"run": "teacher", **teacher, "wall_seconds": teacher_seconds})
    for seed in seeds:
        for run in runs:
            run_dir = output_dir / (run if len(seeds) == 1 else f"{run}_seed{seed}")
            argv = run_argv(run, data_dir, run_dir, epochs, seed, overrides, output_dir / "teacher" / "student.pth")
            log(f"[demo] training {run} (seed {seed}): python tools/our_train.py {' '.join(argv)}")
            run_start = time.perf_counter()
            code = train_main(argv)
            if code != 0:
                raise DemoError(f"training run {run!r} failed with exit code {code} (its error is printed above)")
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            rows.append({"run": run, **summary, "wall_seconds": time.perf_counter() - run_start})
    result = {
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "generate_seconds": generate_seconds,
        "load_average": [load_start, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "data": {
            k: data[k]
            for k in (
                "seed",
                "image_size",
                "train_per_class",
                "test_per_class",
                "teacher_noise",
                "teacher_calibration",
                "unreliable_noise_factor",
            )
        },
    }
    atomic_write_json(output_dir / "results.json", result)
    return result


def format_table(result: dict) -> str:
    """A Markdown table of the runs (one row per run and seed, plus mean rows with several seeds)."""
    lines = [
        "| run | student | distiller | targets | seed | test top-1 last | test top-1 best | best epoch | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['run']} | {row['student']} | {row['distiller']} | {row.get('targets') or '-'} | {row['seed']} "
            f"| {row['test_top1_last']:.2f} | {row['test_top1_best']:.2f} | {row['best_epoch']} "
            f"| {row['wall_seconds']:.0f}s |"
        )
    seeds = sorted({row["seed"] for row in result["rows"] if row["run"] != "teacher"})
    if len(seeds) > 1:
        for run in dict.fromkeys(row["run"] for row in result["rows"] if row["run"] != "teacher"):
            last = [r["test_top1_last"] for r in result["rows"] if r["run"] == run]
            best = [r["test_top1_best"] for r in result["rows"] if r["run"] == run]
            lines.append(
                f"| {run} (mean ± sd of {len(last)}) | | | | | {statistics.mean(last):.2f} ± "
                f"{statistics.stdev(last):.2f} | {statistics.mean(best):.2f} ± {statistics.stdev(best):.2f} "
                "| | |"
            )
    minutes, seconds = divmod(result["seconds"], 60)
    lines.append("")
    lines.append(
        f"total wall time {int(minutes)}m{seconds:04.1f}s (data generation {result['generate_seconds']:.1f}s) "
        f"on {result['cpu_count']} CPU cores; load average {result['load_average'][0]:.1f} at the start, "
        f"{result['load_average'][1]:.1f} at the end"
    )
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--data", default=str(REPO / "data" / "demo"), help="demo data folder (default: data/demo)")
    parser.add_argument("--out", default=str(REPO / "output" / "demo"), help="run folders (default: output/demo)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the data even when it exists")
    parser.add_argument("--runs", default="baseline,makd", help=f"comma-separated runs out of {','.join(RUNS)}")
    parser.add_argument("--seeds", type=_int_list, default=[0], help="training seeds, comma separated (default 0)")
    parser.add_argument("--epochs", type=int, help="override SOLVER.EPOCHS of every run")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated images and teacher")
    parser.add_argument("--train-per-class", type=int, default=200, help="generated training images per class")
    parser.add_argument("--test-per-class", type=int, default=40, help="generated test images per class")
    parser.add_argument("--teacher-noise", type=float, default=1.0, help="std of the simulated teacher's logit noise")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides for every run, e.g. SOLVER.LR 0.1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    generate_kwargs = {
        "seed": args.data_seed,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "teacher_noise": args.teacher_noise,
    }
    try:
        result = run_demo(
            data_dir=args.data,
            output_dir=args.out,
            runs=[r.strip() for r in args.runs.split(",") if r.strip()],
            seeds=args.seeds,
            epochs=args.epochs,
            overrides=args.opts,
            regenerate=args.regenerate,
            generate_kwargs=generate_kwargs,
        )
    except (DemoError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
