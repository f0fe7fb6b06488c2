"""The built-in demo (what `make demo` runs): synthetic data -> a small study -> its table and a verdict.

    python tools/demo.py                       # data/demo if missing; baseline, makd, random x seeds 0,1,2; table
    python tools/demo.py --seeds 0,1,2,3,4     # more seeds: narrower intervals
    python tools/demo.py --epochs 5 SOLVER.LR 0.1                    # any KEY VALUE config override, for every run
    python tools/demo.py --runs baseline,makd,random,oracle          # + MaKD on the true 0/1 answers
    python tools/demo.py --runs baseline,makd,kd,makd_kd             # the KD family, with a CNN teacher
    python tools/demo.py --task detection --seeds 0,1                # detection: Faster R-CNN, aspects per box
    python tools/demo.py --task detection --runs baseline,makd,internvl   # + stage 2 per box on a tiny InternVL

The classification demo is a study (makd.analysis.study, docs/studies.md): every run x seed trains as a
tools/our_train.py process, --jobs at a time, each on --threads threads (default 1, so the table depends on the
machine's CPU only, never on its load or on how many runs go side by side). It writes <out>/study.yaml (run it
again with tools/study.py), the run folders <out>/<run>/seed<seed>, results.md/.csv, runs.csv, and table.md: the
table, the verdict generated from its paired differences (makd.analysis.verdict) and where it was made (date,
commit, CPU, threads), to paste verbatim. Killed, the same command continues (finished runs are kept).

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
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from makd.analysis.provenance import provenance, usable_cores  # noqa: E402
from makd.analysis.results_table import ConditionRow, format_markdown, summarise, write_results  # noqa: E402
from makd.analysis.run_progress import RunProgress, format_duration  # noqa: E402
from makd.analysis.study import StudyError, execute_runs, finished_groups, load_study, plan  # noqa: E402
from makd.analysis.verdict import Verdict, last_by_seed, method_verdict  # noqa: E402
from makd.atomic_files import atomic_write_json, atomic_write_text  # noqa: E402
from makd.commands.train import train_main  # noqa: E402
from makd.config import load_cfg  # noqa: E402
from makd.demo.classification import generate_demo, read_demo_summary  # noqa: E402
from makd.demo.detection import generate_detection_demo, read_detection_demo_summary  # noqa: E402
from makd.errors import MakdError, run_command  # noqa: E402
from makd.formats.files import sha256_file  # noqa: E402

CONFIG_DIR = REPO / "configs" / "demo"
RUNS = ("baseline", "makd", "random", "oracle", "kd", "makd_kd")
DEFAULT_RUNS = ("baseline", "makd", "random")
DEFAULT_SEEDS = (0, 1, 2)
TRAIN_PER_CLASS, TEST_PER_CLASS = 200, 40  # the generated set: 3,200 train / 640 test images (docs/demo.md)
TEACHER_RUNS = ("kd", "makd_kd")  # runs distilling from the demo's CNN teacher
RUN_CONFIGS = {"baseline": "baseline.yaml", "kd": "kd.yaml", "makd_kd": "makd_kd.yaml"}  # others: makd.yaml
# The files a demo run reads: their sha256 identifies the data the runs in an output folder were trained on.
DATA_FINGERPRINT_FILES = ("dataset.json", "aspects_train.json", "aspects_test.json", "truth_train.json")


class DemoError(MakdError):
    """The demo cannot go on (bad data folder, an output folder of other data, a failed training run)."""


def _print_now(line: str) -> None:
    """print, flushed: progress lines must show at once when stdout is a file or a pipe (make demo | tee log)."""
    print(line, flush=True)


def _data_keys(data_dir: Path, train_rows: Path, test_rows: Path) -> dict[str, str]:
    """The data paths every demo run sets explicitly (so any working folder works)."""
    return {
        "DATASET.TRAIN_IMAGE_PATH": str(data_dir / "train"),
        "DATASET.TEST_IMAGE_PATH": str(data_dir / "test"),
        "DATASET.QUESTIONS": str(data_dir / "questions.txt"),
        "DATASET.ASPECT_JSON": str(train_rows),
        "DATASET.TEST_ASPECT_JSON": str(test_rows),
    }


def _data_argv(config: Path, run_dir: Path, seed: int, data_dir: Path, train_rows: Path, test_rows: Path) -> list[str]:
    """The tools/our_train.py arguments of one in-process demo run: its config, run folder, seed and data paths."""
    argv = [str(config), "--overwrite", "OUTPUT_DIR", str(run_dir), "SEED", str(seed)]
    for key, value in _data_keys(data_dir, train_rows, test_rows).items():
        argv += [key, value]
    return argv


def _config_keys(config: Path) -> dict[str, Any]:
    """A demo config's own keys (without _BASE_ and EXPERIMENT) as flat KEY: VALUE: what makes the run differ from
    configs/demo/makd.yaml, read from the file so the study and the config never disagree."""
    tree = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk({k: v for k, v in tree.items() if k not in ("_BASE_", "EXPERIMENT")}, "")
    return flat


def condition_keys(run: str, data_dir: Path, teacher_checkpoint: Path) -> dict[str, Any]:
    """KEY: VALUE of one demo run on top of configs/demo/makd.yaml and the study's common keys."""
    if run not in RUNS:
        raise DemoError(f"unknown demo run {run!r}; use some of {', '.join(RUNS)} (comma separated)")
    keys = _config_keys(CONFIG_DIR / RUN_CONFIGS.get(run, "makd.yaml"))
    if run == "random":
        keys["MaKD.TARGETS"] = "random"
    if run == "oracle":
        keys["DATASET.ASPECT_JSON"] = str(data_dir / "truth_train.json")
        keys["DATASET.TEST_ASPECT_JSON"] = str(data_dir / "truth_test.json")
    if run in TEACHER_RUNS:
        keys["DISTILLER.TEACHER_CHECKPOINT"] = str(teacher_checkpoint)
    return keys


def demo_study_spec(
    *,
    data_dir: Path,
    output_dir: Path,
    runs: Sequence[str],
    seeds: Sequence[int],
    threads: int,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The study file of the demo (docs/studies.md): what tools/study.py would run for the same table.

    `overrides` are KEY VALUE pairs from the command line; they apply to every run, after the demo's own keys.
    """
    if len(overrides) % 2:
        raise DemoError(f"config overrides come in KEY VALUE pairs; got an odd number: {' '.join(overrides)}")
    if "NUM_THREADS" in overrides[::2]:
        raise DemoError("set the threads of every run with --threads, not NUM_THREADS (the table names them)")
    common: dict[str, Any] = {
        **_data_keys(data_dir, data_dir / "aspects_train.json", data_dir / "aspects_test.json"),
        "NUM_THREADS": threads,  # the table is that of this thread count (docs/demo.md)
    }
    if epochs is not None:
        common["SOLVER.EPOCHS"] = epochs
    common.update(zip(overrides[::2], overrides[1::2]))  # text, parsed by our_train.py like its own KEY VALUE
    teacher = output_dir / "teacher" / "student.pth"
    conditions = {run: condition_keys(run, data_dir, teacher) for run in runs}
    return {
        "name": f"make demo ({len(runs)} conditions x {len(seeds)} seeds)",
        "base": str(CONFIG_DIR / "makd.yaml"),
        "output": str(output_dir),
        "seeds": list(seeds),
        "overrides": common,
        "reference": "baseline" if "baseline" in runs else runs[0],
        "conditions": conditions,
    }


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
    try:
        summary = generate_demo(data_dir, overwrite=True, **generate_kwargs)
    except ValueError as err:  # a size or teacher setting out of range
        raise DemoError(str(err)) from None
    return summary, time.perf_counter() - start


def data_fingerprint(data_dir: Path) -> dict[str, str]:
    return {name: sha256_file(data_dir / name) for name in DATA_FINGERPRINT_FILES}


def check_output_data(output_dir: Path, data_dir: Path, runs: Sequence[str]) -> None:
    """Refuse an output folder whose runs were trained on other data (same config paths, other files: the study
    would take them as finished and mix them into the table); record the data's fingerprint otherwise."""
    record = output_dir / "data_fingerprint.json"
    now = data_fingerprint(data_dir)
    trained = [p.parent for run in runs for p in sorted((output_dir / run).glob("seed*/config.yaml"))]
    trained += [output_dir / "teacher"] if (output_dir / "teacher" / "config.yaml").is_file() else []
    if record.is_file() and trained and json.loads(record.read_text(encoding="utf-8")) != now:
        raise DemoError(
            f"the runs in {output_dir} (e.g. {trained[0]}) were trained on other data than {data_dir} holds now; "
            "delete that folder (make clean-demo) or pass --out to use another"
        )
    if not record.is_file() and trained:
        raise DemoError(
            f"{output_dir} holds runs (e.g. {trained[0]}) but no record of their data; delete that folder "
            "(make clean-demo) or pass --out to use another"
        )
    atomic_write_json(record, now)


def teacher_argv(data_dir: Path, teacher_dir: Path, epochs: int | None, threads: int, overrides: Sequence[str]):
    """tools/our_train.py arguments of the CNN teacher of kd / makd_kd (configs/demo/teacher.yaml, seed 0)."""
    argv = _data_argv(
        CONFIG_DIR / "teacher.yaml",
        teacher_dir,
        0,
        data_dir,
        data_dir / "aspects_train.json",
        data_dir / "aspects_test.json",
    )
    argv += ["NUM_THREADS", str(threads)]
    if epochs is not None:
        argv += ["SOLVER.EPOCHS", str(epochs)]
    return argv + list(overrides)


def ensure_teacher(
    data_dir: Path,
    output_dir: Path,
    epochs: int | None,
    threads: int,
    overrides: Sequence[str],
    log: Callable[[str], None],
) -> float:
    """Train the demo's CNN teacher into `output_dir`/teacher unless a finished one with the same resolved config
    is there; returns the seconds spent training (0 when reused)."""
    teacher_dir = output_dir / "teacher"
    argv = teacher_argv(data_dir, teacher_dir, epochs, threads, overrides)
    wanted = load_cfg(argv[0], argv[2:]).dump()
    done = teacher_dir / "summary.json"
    if done.is_file() and (teacher_dir / "student.pth").is_file() and (teacher_dir / "config.yaml").is_file():
        if (teacher_dir / "config.yaml").read_text(encoding="utf-8") == wanted:
            log(f"[demo] teacher {teacher_dir} already trained with this config: reused")
            return 0.0
        log(f"[demo] teacher {teacher_dir} was trained with another config: training it again")
    log(f"[demo] training the CNN teacher: python tools/our_train.py {' '.join(argv)}")
    start = time.perf_counter()
    if train_main(argv) != 0:
        raise DemoError("training the demo teacher failed (its error is printed above)")
    return time.perf_counter() - start


def run_demo(
    *,
    data_dir: str | os.PathLike = "data/demo",
    output_dir: str | os.PathLike = "output/demo",
    runs: Sequence[str] = DEFAULT_RUNS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    epochs: int | None = None,
    threads: int = 1,
    jobs: int | None = None,
    overrides: Sequence[str] = (),
    regenerate: bool = False,
    generate_kwargs: dict | None = None,
    command: str = "python tools/demo.py",
    log: Callable[[str], None] = _print_now,
) -> dict[str, Any]:
    """Generate the data (when needed), train every run x seed as a study, and write its tables.

    `command` is how table.md names what made it.

    Returns {"markdown": table.md's text, "verdict": Verdict or None, "rows": [ConditionRow], "timing": {...}};
    writes `output_dir`/study.yaml, the run folders, results.md/.csv, runs.csv, table.md and timing.json.
    `jobs` (default: the usable cores // threads, at most the runs to train) trainings go side by side.
    """
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    data_dir, output_dir = Path(data_dir).absolute(), Path(output_dir).absolute()
    if threads < 1:
        raise DemoError(f"--threads must be >= 1, got {threads}")
    if not runs or not seeds:
        raise DemoError("the demo needs at least one run and one seed")
    for run in runs:
        if run not in RUNS:
            raise DemoError(f"unknown demo run {run!r}; use some of {', '.join(RUNS)} (comma separated)")
    data, generate_seconds = ensure_data(data_dir, regenerate, dict(generate_kwargs or {}))
    log(
        f"[demo] data {data_dir}: {data['num_train']} train / {data['num_test']} test images, "
        f"{data['num_classes']} classes, {data['num_questions']} questions"
        + (f" (generated in {generate_seconds:.1f}s)" if generate_seconds else " (already there)")
    )
    check_output_data(output_dir, data_dir, runs)
    spec = demo_study_spec(
        data_dir=data_dir,
        output_dir=output_dir,
        runs=runs,
        seeds=seeds,
        threads=threads,
        epochs=epochs,
        overrides=overrides,
    )
    study_path = output_dir / "study.yaml"
    atomic_write_text(study_path, yaml.safe_dump(spec, sort_keys=False))
    study = load_study(study_path)
    try:
        planned = plan(study)  # every run's config resolved: a bad override stops here, before any training
    except StudyError as err:
        raise DemoError(f"{err}; or run `make clean-demo` / pass --out") from None
    teacher_seconds = 0.0
    if any(run in TEACHER_RUNS for run in runs):
        teacher_seconds = ensure_teacher(data_dir, output_dir, epochs, threads, overrides, log)
    pending = [(run, status) for run, status, _ in planned if status != "done"]
    jobs = jobs or max(1, min(len(pending), usable_cores() // threads))
    log(
        f"[demo] {len(planned)} runs ({len(runs)} conditions x {len(seeds)} seeds), "
        f"{len(planned) - len(pending)} already finished; training {len(pending)}, {jobs} at a time, "
        f"{_count(threads, 'thread')} each "
        f"(the numbers are those of {_count(threads, 'thread')}: the same on this machine however busy)"
    )
    progress = RunProgress(len(pending), jobs)
    _, failed = execute_runs(pending, jobs, log, threads=threads, progress=progress)
    if failed:
        names = ", ".join(f"{run.label} (exit {code}, log {run.log_path})" for run, code in failed)
        raise DemoError(f"{len(failed)} demo run(s) failed: {names}; run the same command again to retry them")
    groups = finished_groups(study)
    rows, reference = summarise(groups, study.reference)
    verdict = None
    if "makd" in groups and reference in groups and reference != "makd":
        verdict = method_verdict(last_by_seed(groups), method="makd", reference=reference, control="random")
    timing = {
        "seconds": time.perf_counter() - start,
        "generate_seconds": generate_seconds,
        "teacher_seconds": teacher_seconds,
        "jobs": jobs,
        "threads": threads,
        "load_average": [load_start, os.getloadavg()[0]],
        "runs": {label: vars(cost) for label, cost in progress.costs.items()},
    }
    earlier = output_dir / "timing.json"
    if not pending and earlier.is_file():
        # Nothing trained now: the table keeps the time of the call that trained the runs (and its jobs).
        previous = json.loads(earlier.read_text(encoding="utf-8"))
        if set(previous.get("runs", {})) == {run.label for run, _, _ in planned}:
            timing = previous
    write_results(output_dir, rows, reference, title=f"Study {study.name}")  # as tools/study.py titles it
    teacher = None
    if any(run in TEACHER_RUNS for run in runs):
        teacher = json.loads((output_dir / "teacher" / "summary.json").read_text(encoding="utf-8"))
    markdown = format_demo_markdown(rows, reference, verdict, data, spec, timing, teacher, command)
    atomic_write_text(output_dir / "table.md", markdown)
    atomic_write_json(output_dir / "timing.json", timing)
    return {"markdown": markdown, "verdict": verdict, "rows": rows, "timing": timing}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def format_seed_table(rows: Sequence[ConditionRow]) -> list[str]:
    """Markdown lines: one row per condition, the last-epoch test top-1 of each seed."""
    seeds = sorted({seed for row in rows for seed in row.seeds})
    lines = [
        "| condition | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for row in rows:
        by_seed = {run.seed: run.last for run in row.runs}
        cells = [f"{by_seed[s]:.2f}" if s in by_seed else "-" for s in seeds]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def format_demo_markdown(
    rows: Sequence[ConditionRow],
    reference: str,
    verdict: Verdict | None,
    data: dict,
    spec: dict,
    timing: dict,
    teacher: dict | None = None,
    command: str = "python tools/demo.py",
) -> str:
    """table.md: what was run, where, the study table, the per-seed values, the verdict and the timing.
    `teacher` = the summary.json of the CNN teacher of kd / makd_kd, when those ran."""
    made = provenance(REPO)
    cfg = load_cfg(spec["base"], [str(x) for k, v in spec["overrides"].items() for x in (k, v)])
    threads = timing["threads"]
    lines = [
        f"Made by `{command}`{' (what `make demo` runs)' if command == 'python tools/demo.py' else ''} on "
        f"{made.date}, commit {made.commit}: {made.cpu_model}, "
        f"{made.cores} cores, {_count(threads, 'thread')} per run, {_count(timing['jobs'], 'run')} at a time; "
        f"{made.versions}.",
        "",
        f"Data: {data['num_classes']} classes, {data['num_train']:,} train / {data['num_test']:,} test images of "
        f"{data['image_size']} px (data seed {data['seed']}), a simulated teacher answering {data['num_questions']} "
        f"questions. Student `{cfg.DISTILLER.STUDENT}`, {_count(cfg.SOLVER.EPOCHS, 'epoch')}, "
        f"batch {cfg.SOLVER.BATCH_SIZE}, lr {cfg.SOLVER.LR:g} {cfg.SOLVER.SCHEDULER}, MaKD ALPHA {cfg.MaKD.ALPHA:g}.",
        "",
    ]
    if teacher is not None:
        lines += [
            f"The kd and makd_kd runs distil from a CNN teacher, `{teacher['student']}` trained with cross-entropy "
            f"(seed {teacher['seed']}, same data and schedule): test top-1 {teacher['test_top1_last']:.2f} %.",
            "",
        ]
    table = format_markdown(rows, reference, title=spec["name"]).splitlines()
    lines += table[2:]  # without its own title: table.md is pasted under a heading of the reader's
    lines += ["", "Last-epoch test top-1 (%) by seed:", "", *format_seed_table(rows), ""]
    if verdict is not None:
        lines += [verdict.text, ""]
    costs = list(timing["runs"].values())
    if costs:
        cpu = [c["cpu_seconds"] for c in costs]
        wall = [c["wall_seconds"] for c in costs]
        lines.append(
            f"Time: {format_duration(timing['seconds'])} wall in all (data generation "
            f"{timing['generate_seconds']:.0f} s); {len(costs)} runs trained, each {min(wall):.0f}-{max(wall):.0f} s "
            f"wall and {min(cpu):.0f}-{max(cpu):.0f} s CPU (mean {statistics.mean(cpu):.0f} s); load average "
            f"{timing['load_average'][0]:.1f} at the start, {timing['load_average'][1]:.1f} at the end."
        )
    else:
        lines.append(
            "Time: every run was already finished, and no timing.json holds the times of all of them (they were "
            f"trained by several calls); this call took {format_duration(timing['seconds'])}."
        )
    return "\n".join(lines) + "\n"


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
        help=f"comma-separated runs out of {','.join(RUNS)} (default {','.join(DEFAULT_RUNS)}; detection: out of "
        f"{','.join(DETECTION_RUNS)}, default baseline,makd)",
    )
    parser.add_argument(
        "--seeds",
        type=_int_list,
        help=f"training seeds, comma separated (default {','.join(map(str, DEFAULT_SEEDS))}; detection: 0)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every run (default 1: the table then depends on the CPU model only, not on the load)",
    )
    parser.add_argument(
        "--jobs", type=int, help="runs side by side (default: the usable cores // --threads, at most the runs to train)"
    )
    parser.add_argument("--epochs", type=int, help="override SOLVER.EPOCHS of every run")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated images and teacher")
    parser.add_argument(
        "--train-per-class", type=int, default=TRAIN_PER_CLASS, help="generated training images per class"
    )
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS, help="generated test images per class")
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
            runs=_run_list(args.runs or "baseline,makd"),
            seeds=args.seeds or [0],
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


def _run_list(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


def _classification_main(args, argv: Sequence[str]) -> int:
    generate_kwargs = {
        "seed": args.data_seed,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "teacher_noise": args.teacher_noise,
    }
    if args.jobs is not None and args.jobs < 1:
        raise DemoError(f"--jobs must be >= 1, got {args.jobs}")
    output_dir = Path(args.out or REPO / "output" / "demo")
    result = run_demo(
        data_dir=args.data or REPO / "data" / "demo",
        output_dir=output_dir,
        runs=_run_list(args.runs or ",".join(DEFAULT_RUNS)),
        seeds=args.seeds or list(DEFAULT_SEEDS),
        epochs=args.epochs,
        threads=args.threads,
        jobs=args.jobs,
        overrides=args.opts,
        regenerate=args.regenerate,
        generate_kwargs=generate_kwargs,
        command=shlex.join(["python", "tools/demo.py", *argv]),
    )
    print()
    print(result["markdown"], end="")
    print(f"\n[demo] wrote {output_dir / 'table.md'} (the text above, to paste verbatim), results.md, results.csv, "
          "runs.csv and timing.json")  # fmt: skip
    return 0


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.task == "detection":
        return _detection_main(args)
    return _classification_main(args, sys.argv[1:] if argv is None else argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_body, argv, resume_hint="run the same command again to continue the demo")


if __name__ == "__main__":
    sys.exit(main())
