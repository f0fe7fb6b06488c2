"""The built-in demo (what `make demo` runs): synthetic data -> CE baseline and MaKD students -> a table.

    python tools/demo.py                       # generate data/demo if missing, train both, print the table
    python tools/demo.py --epochs 5 SEED 1     # fewer epochs, any KEY VALUE config overrides
    python tools/demo.py --runs baseline,makd,random --seeds 0,1,2   # add the random-targets control
    python tools/demo.py --runs baseline,makd,kd,makd_kd             # the KD family, with a CNN teacher
    python tools/demo.py --task detection --seeds 0,1                # detection: Faster R-CNN, aspects per box
    python tools/demo.py --task detection --runs baseline,makd,internvl   # + stage 2 per box on a tiny InternVL

Runs: baseline (configs/demo/baseline.yaml), makd (configs/demo/makd.yaml), random (makd with
MaKD.TARGETS random: the paper's control), oracle (makd trained on the true 0/1 answers instead of
the simulated teacher), kd (configs/demo/kd.yaml) and makd_kd (configs/demo/makd_kd.yaml). kd and makd_kd
need a CNN teacher: the demo trains it first with the same command (configs/demo/teacher.yaml, cross-entropy
only) into <out>/teacher and reuses it on later calls while its resolved config is unchanged. See docs/demo.md
and docs/methods.md.

--task detection (docs/detection.md) generates data/demo_detection (64-px scenes of 2-3 demo shapes, COCO boxes,
a simulated per-box teacher) and trains configs/demo_detection: baseline (the detector alone), makd (aspect BCE per
box against the simulated teacher), random (MaKD.TARGETS random), image (the image-level variant) and internvl
(makd on the rows stage 2 writes per box with a tiny random InternVL: the whole pipeline, with a teacher that
knows nothing).
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

from makd.atomic_files import atomic_write_json  # noqa: E402
from makd.commands.train import train_main  # noqa: E402
from makd.config import load_cfg  # noqa: E402
from makd.demo.classification import generate_demo, read_demo_summary  # noqa: E402
from makd.demo.detection import generate_detection_demo, read_detection_demo_summary  # noqa: E402

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
    argv = _data_argv(
        config,
        run_dir,
        seed,
        data_dir,
        data_dir / ("truth_train.json" if truth else "aspects_train.json"),
        data_dir / ("truth_test.json" if truth else "aspects_test.json"),
    )
    if run == "random":
        argv += ["MaKD.TARGETS", "random"]
    if run in TEACHER_RUNS:
        argv += ["DISTILLER.TEACHER_CHECKPOINT", str(teacher_checkpoint)]
    if epochs is not None:
        argv += ["SOLVER.EPOCHS", str(epochs)]
    return argv + list(overrides)


def _data_argv(config: Path, run_dir: Path, seed: int, data_dir: Path, train_rows: Path, test_rows: Path) -> list[str]:
    """The tools/our_train.py arguments every demo run shares: its config, run folder, seed and data paths."""
    return [
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
        str(train_rows),
        "DATASET.TEST_ASPECT_JSON",
        str(test_rows),
    ]


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


# ----------------------------------------------------------------------------- the detection demo
DETECTION_CONFIG_DIR = REPO / "configs" / "demo_detection"
DETECTION_RUNS = ("baseline", "makd", "random", "image", "internvl")


def detection_run_argv(
    run: str, data_dir: Path, run_dir: Path, epochs: int | None, seed: int, overrides: Sequence[str], rows: Path
) -> list[str]:
    """tools/our_train.py arguments of one detection demo run; `rows` = the internvl run's stage-2 folder."""
    if run not in DETECTION_RUNS:
        raise DemoError(f"unknown detection demo run {run!r}; use some of {', '.join(DETECTION_RUNS)}")
    level = "image" if run == "image" else "box"
    aspects = {"train": data_dir / f"{level}_aspects_train.json", "test": data_dir / f"{level}_aspects_test.json"}
    if run == "internvl":
        aspects = {split: rows / f"box_aspects_{split}.json" for split in ("train", "test")}
    config = DETECTION_CONFIG_DIR / ("baseline.yaml" if run == "baseline" else "makd.yaml")
    argv = _data_argv(config, run_dir, seed, data_dir, aspects["train"], aspects["test"]) + [
        "DETECTION.TRAIN_JSON",
        str(data_dir / "instances_train.json"),
        "DETECTION.TEST_JSON",
        str(data_dir / "instances_test.json"),
        "DETECTION.ASPECT_LEVEL",
        level,
    ]
    if run == "random":
        argv += ["MaKD.TARGETS", "random"]
    if epochs is not None:
        argv += ["SOLVER.EPOCHS", str(epochs)]
    return argv + list(overrides)


def ensure_internvl_rows(data_dir: Path, out: Path, boxes_view: str, log: Callable[[str], None]) -> tuple[Path, float]:
    """Stage 2 per box over the demo's train and test boxes with a tiny random InternVL built on the spot (no
    download); reused when its files are there. Returns (folder of box_aspects_{train,test}.json, seconds)."""
    from makd.commands.stage2 import main as extract_main
    from makd.demo.tiny_internvl import build_tiny_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    model = out / "tiny_internvl"
    done = [out / f"box_aspects_{split}.json" for split in ("train", "test")]
    if all(path.is_file() for path in done):
        log(f"[demo] stage-2 rows of the tiny InternVL already in {out}: reused")
        return out, 0.0
    start = time.perf_counter()
    if not (model / "config.json").is_file():
        build_tiny_checkpoint(model, "hf")
    for split, output in zip(("train", "test"), done):
        argv = ["--model", str(model), "--questions", str(data_dir / "questions.txt"), "--boxes",
                str(data_dir / f"instances_{split}.json"), "--images", str(data_dir / split), "--output",
                str(output), "--boxes-view", boxes_view, "--max-tiles", "1", "--dtype", "float32", "--device", "cpu",
                "--overwrite", "--no-progress"]  # fmt: skip
        log(f"[demo] stage 2 per box ({split}): python InternVL_logits/make_makd_logits_json.py {' '.join(argv)}")
        if extract_main(argv) != 0:
            raise DemoError(f"stage 2 per box on the {split} boxes failed (its error is printed above)")
    return out, time.perf_counter() - start


def run_detection_demo(
    *,
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    runs: Sequence[str] = ("baseline", "makd"),
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    regenerate: bool = False,
    generate_kwargs: dict | None = None,
    boxes_view: str = "crop",
    log: Callable[[str], None] = print,
) -> dict:
    """The detection demo: data (generated when missing), stage 2 per box when the internvl run is asked, then every
    run x seed; returns {"rows": [...], "seconds": ...} and writes it to `output_dir`/results.json."""
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    for run in runs:
        if run not in DETECTION_RUNS:
            raise DemoError(f"unknown detection demo run {run!r}; use some of {', '.join(DETECTION_RUNS)}")
    kwargs = dict(generate_kwargs or {})
    summary = None if regenerate else read_detection_demo_summary(data_dir)
    generate_seconds = 0.0
    if summary is not None:
        different = {k: (summary.get(k), v) for k, v in kwargs.items() if summary.get(k) != v}
        if different:
            raise DemoError(f"{data_dir} was generated with other settings ({different}); pass --regenerate")
    else:
        if data_dir.exists() and any(data_dir.iterdir()) and not regenerate:
            raise DemoError(f"{data_dir} exists but holds no complete detection demo; pass --regenerate or --data")
        generate_start = time.perf_counter()
        summary = generate_detection_demo(data_dir, overwrite=True, **kwargs)
        generate_seconds = time.perf_counter() - generate_start
    counts = summary["counts"]
    log(
        f"[demo] detection data {data_dir}: {counts['train']['images']} train images ({counts['train']['boxes']} "
        f"boxes) / {counts['test']['images']} test, {summary['num_classes']} classes, {summary['num_questions']} "
        "questions" + (f" (generated in {generate_seconds:.1f}s)" if generate_seconds else " (already there)")
    )
    rows_dir, stage2_seconds = output_dir / "stage2_internvl", 0.0
    if "internvl" in runs:
        rows_dir, stage2_seconds = ensure_internvl_rows(data_dir, rows_dir, boxes_view, log)
    rows = []
    for seed in seeds:
        for run in runs:
            run_dir = output_dir / (run if len(seeds) == 1 else f"{run}_seed{seed}")
            argv = detection_run_argv(run, data_dir, run_dir, epochs, seed, overrides, rows_dir)
            log(f"[demo] training {run} (seed {seed}): python tools/our_train.py {' '.join(argv)}")
            run_start = time.perf_counter()
            if train_main(argv) != 0:
                raise DemoError(f"training run {run!r} failed (its error is printed above)")
            result = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            rows.append({"run": run, **result, "wall_seconds": time.perf_counter() - run_start})
    result = {
        "task": "detection",
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "generate_seconds": generate_seconds,
        "stage2_seconds": stage2_seconds,
        "load_average": [load_start, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "data": {k: summary[k] for k in ("seed", "image_size", "num_train", "num_test", "max_shapes", "teacher_noise")},
    }
    atomic_write_json(output_dir / "results.json", result)
    return result


def format_detection_table(result: dict) -> str:
    """Markdown: one row per run and seed (COCO mAP in %, the aspect head's MAE against its teacher on the test
    boxes), plus mean ± sd rows with several seeds."""
    lines = [
        "| run | aspects | targets | seed | mAP | mAP@50 | mAP@75 | best mAP (epoch) | aspect MAE | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        mae = row.get("test_aspect_mae_last")
        lines.append(
            f"| {row['run']} | {row.get('aspect_level') or '-'} | {row.get('targets') or '-'} | {row['seed']} "
            f"| {row['test_map_last']:.2f} | {row['test_map50_last']:.2f} | {row['test_map75_last']:.2f} "
            f"| {row['test_map_best']:.2f} ({row['best_epoch']}) | {'-' if mae is None else f'{mae:.3f}'} "
            f"| {row['wall_seconds']:.0f}s |"
        )
    seeds = sorted({row["seed"] for row in result["rows"]})
    if len(seeds) > 1:
        for run in dict.fromkeys(row["run"] for row in result["rows"]):
            cells = []
            for key in ("test_map_last", "test_map50_last", "test_map75_last"):
                values = [r[key] for r in result["rows"] if r["run"] == run]
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
            lines.append(f"| {run} (mean ± sd of {len(seeds)}) | | | | {' | '.join(cells)} | | | |")
    minutes, seconds = divmod(result["seconds"], 60)
    lines += [
        "",
        f"total wall time {int(minutes)}m{seconds:04.1f}s (data generation {result['generate_seconds']:.1f}s, stage 2 "
        f"per box {result['stage2_seconds']:.1f}s) on {result['cpu_count']} CPU cores; load average "
        f"{result['load_average'][0]:.1f} at the start, {result['load_average'][1]:.1f} at the end",
    ]
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
    parser.add_argument(
        "--task",
        choices=("classification", "detection"),
        default="classification",
        help="the image demo (default) or the detection demo (docs/detection.md)",
    )
    parser.add_argument("--data", help="demo data folder (default: data/demo, detection: data/demo_detection)")
    parser.add_argument("--out", help="run folders (default: output/demo, detection: output/demo_detection)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the data even when it exists")
    parser.add_argument(
        "--runs",
        default="baseline,makd",
        help=f"comma-separated runs out of {','.join(RUNS)} (detection: {','.join(DETECTION_RUNS)})",
    )
    parser.add_argument("--seeds", type=_int_list, default=[0], help="training seeds, comma separated (default 0)")
    parser.add_argument("--epochs", type=int, help="override SOLVER.EPOCHS of every run")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated images and teacher")
    parser.add_argument("--train-per-class", type=int, default=200, help="generated training images per class")
    parser.add_argument("--test-per-class", type=int, default=40, help="generated test images per class")
    parser.add_argument("--teacher-noise", type=float, default=1.0, help="std of the simulated teacher's logit noise")
    detection = parser.add_argument_group("--task detection")
    detection.add_argument("--num-train", type=int, default=600, help="generated training images")
    detection.add_argument("--num-test", type=int, default=150, help="generated test images")
    detection.add_argument(
        "--boxes-view",
        choices=("crop", "whole"),
        default="crop",
        help="run internvl: stage 2 sees each box as its crop, or the whole image with the box drawn",
    )
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides for every run, e.g. SOLVER.LR 0.1")
    return parser


def _detection_main(args) -> int:
    generate_kwargs = {"seed": args.data_seed, "num_train": args.num_train, "num_test": args.num_test}
    generate_kwargs["teacher_noise"] = args.teacher_noise
    try:
        result = run_detection_demo(
            data_dir=args.data or REPO / "data" / "demo_detection",
            output_dir=args.out or REPO / "output" / "demo_detection",
            runs=[r.strip() for r in args.runs.split(",") if r.strip()],
            seeds=args.seeds,
            epochs=args.epochs,
            overrides=args.opts,
            regenerate=args.regenerate,
            generate_kwargs=generate_kwargs,
            boxes_view=args.boxes_view,
        )
    except (DemoError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(format_detection_table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.task == "detection":
        return _detection_main(args)
    generate_kwargs = {
        "seed": args.data_seed,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "teacher_noise": args.teacher_noise,
    }
    try:
        result = run_demo(
            data_dir=args.data or REPO / "data" / "demo",
            output_dir=args.out or REPO / "output" / "demo",
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
