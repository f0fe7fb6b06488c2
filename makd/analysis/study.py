"""A study: one base config, named conditions (KEY VALUE overrides), seeds and an optional sweep, run as
tools/our_train.py subprocesses, one run folder per condition and seed, then summarised (results.md/.csv).

Study file (YAML; paths are relative to the folder the command runs in, like every config path):

    name: demo                          # title of results.md
    base: configs/demo/makd.yaml        # the config every run starts from
    output: output/studies/demo         # run folders: <output>/<condition>/seed<seed>
    seeds: [0, 1, 2]
    overrides: {SOLVER.EPOCHS: 5}       # KEY: VALUE for every run (optional)
    reference: baseline                 # condition the differences are taken against (default: the first)
    conditions:                         # name: {KEY: VALUE, ...} (an empty mapping = the base config)
      baseline: {DISTILLER.TYPE: NONE}
      makd: {}
    sweep:                              # optional: each listed condition once per value, named "makd@MaKD.ALPHA=1"
      key: MaKD.ALPHA
      values: [1.0, 4.0]
      conditions: [makd]                # default: every condition but the reference
    plots: {curves: true, tsne: [baseline, makd], aspects: makd}   # optional; seeds: first (default), all or a list

A run is finished when its folder holds summary.json; a folder with latest.pth but no summary is resumed
(--resume); anything else starts fresh. A finished or resumable run whose saved config no longer matches the
study is refused (delete its folder or change `output`), so a table never mixes settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from makd.analysis.run_folders import RunResult, read_config, read_run
from makd.analysis.run_progress import RunProgress
from makd.config.defaults import flatten_tree
from makd.errors import MakdError, Terminated
from makd.file_lock import exclusive_lock
from makd.formats.strict_yaml import load_yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO / "tools" / "our_train.py"
STUDY_SCRIPT = REPO / "tools" / "study.py"
# Config keys that may differ between a study's runs and their saved config without changing the result
# (workers, evaluation batch size, device, logging); OUTPUT_DIR/EXPERIMENT.NAME are set by the study itself.
RESULT_NEUTRAL_PREFIXES = ("DATASET.NUM_WORKERS", "DATASET.TEST.BATCH_SIZE", "DEVICE", "LOG.")
STUDY_KEYS = {"name", "base", "output", "seeds", "overrides", "reference", "conditions", "sweep", "plots"}


class StudyError(MakdError):
    """A study file is wrong, a run folder does not match the study, or runs failed."""


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a study: condition x seed, its folder and its tools/our_train.py arguments."""

    condition: str
    seed: int
    run_dir: Path
    argv: tuple[str, ...]  # without --resume

    @property
    def label(self) -> str:
        return f"{self.condition}/seed{self.seed}"

    @property
    def log_path(self) -> Path:
        """The run's output, next to its folder (the trainer refuses a run folder holding files it did not write)."""
        return self.run_dir.parent / f"{self.run_dir.name}.log"


@dataclass
class Study:
    name: str
    base: Path
    output: Path
    seeds: list[int]
    reference: str
    conditions: dict[str, list[str]]  # name -> KEY VALUE list (global overrides first)
    plots: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def runs(self) -> list[PlannedRun]:
        planned = []
        for condition, opts in self.conditions.items():
            for seed in self.seeds:
                run_dir = self.output / slug(condition) / f"seed{seed}"
                argv = (
                    str(self.base),
                    "OUTPUT_DIR",
                    str(run_dir),
                    "EXPERIMENT.NAME",
                    condition,
                    "SEED",
                    str(seed),
                    *opts,
                )
                planned.append(PlannedRun(condition, seed, run_dir, argv))
        return planned


def slug(condition: str) -> str:
    """A folder name for a condition: 'makd@MaKD.ALPHA=1.0' -> 'makd@MaKD.ALPHA=1.0'; other characters -> '_'."""
    return re.sub(r"[^A-Za-z0-9@=.+_-]", "_", condition)


def _value_text(value: Any) -> str:
    """A YAML value as the text our_train.py parses back (yaml.safe_load) to the same value."""
    if isinstance(value, str):
        return value
    return json.dumps(value)  # JSON is YAML: numbers, booleans, lists survive the round trip


def _overrides(mapping: Any, where: str) -> list[str]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise StudyError(f"{where} must be a mapping of KEY: VALUE overrides, got {type(mapping).__name__}")
    opts: list[str] = []
    for key, value in mapping.items():
        if key in ("SEED", "OUTPUT_DIR", "EXPERIMENT.NAME"):
            raise StudyError(f"{where} sets {key}, which the study sets for every run; use `seeds` / `output`")
        opts += [str(key), _value_text(value)]
    return opts


def load_study(path: str | os.PathLike) -> Study:
    """Parse and check a study file (no run started); StudyError with one line on any mistake."""
    path = Path(path)
    try:
        # strictly: a condition written twice would silently keep only the second under the first's place
        spec = load_yaml(path.read_text(encoding="utf-8"), f"study file {path}")
    except OSError as err:
        raise StudyError(f"cannot read study file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise StudyError(f"study file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(spec, dict):
        raise StudyError(f"study file {path} must be a YAML mapping (name, base, output, seeds, conditions)")
    unknown = sorted(set(spec) - STUDY_KEYS)
    if unknown:
        raise StudyError(
            f"study file {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(STUDY_KEYS))}"
        )
    for key in ("base", "output", "conditions"):
        if not spec.get(key):
            raise StudyError(f"study file {path}: `{key}` is missing")
    base = Path(spec["base"])
    if not base.is_file():
        raise StudyError(f"study file {path}: base config {base} does not exist (paths are relative to {os.getcwd()})")
    seeds = spec.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise StudyError(f"study file {path}: `seeds` must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"study file {path}: `seeds` lists a seed twice: {seeds}")
    if not isinstance(spec["conditions"], dict):
        raise StudyError(f"study file {path}: `conditions` must map names to {{KEY: VALUE}} overrides")
    common = _overrides(spec.get("overrides"), f"{path}: overrides")
    conditions = {
        str(name): common + _overrides(opts or {}, f"{path}: condition {name}")
        for name, opts in spec["conditions"].items()
    }
    reference = str(spec.get("reference", next(iter(conditions))))
    if reference not in conditions:
        raise StudyError(f"study file {path}: reference {reference!r} is not a condition ({', '.join(conditions)})")
    if spec.get("sweep"):
        conditions = _expand_sweep(spec["sweep"], conditions, reference, path)
    for name in conditions:
        if not slug(name) or slug(name) in (".", ".."):
            raise StudyError(f"study file {path}: condition name {name!r} cannot name a folder")
    slugs = [slug(name) for name in conditions]
    if len(set(slugs)) != len(slugs):
        raise StudyError(f"study file {path}: two conditions map to the same folder name ({slugs})")
    plots = spec.get("plots") or {}
    if plots is True:
        plots = {"curves": True}
    if not isinstance(plots, dict):
        raise StudyError(f"study file {path}: `plots` must be a mapping (curves, tsne, aspects) or true")
    for key in ("tsne",):
        for name in plots.get(key) or []:
            if name not in conditions:
                raise StudyError(f"study file {path}: plots.{key} names {name!r}, not a condition")
    if plots.get("aspects") and plots["aspects"] not in conditions:
        raise StudyError(f"study file {path}: plots.aspects names {plots['aspects']!r}, not a condition")
    plot_seeds(plots.get("seeds", "first"), seeds, f"study file {path}: plots.seeds")  # checked before any run
    return Study(
        str(spec.get("name") or path.stem), base, Path(spec["output"]), seeds, reference, conditions, plots, path
    )


def _expand_sweep(sweep: Any, conditions: dict[str, list[str]], reference: str, path: Path) -> dict[str, list[str]]:
    if not isinstance(sweep, dict) or "key" not in sweep or not isinstance(sweep.get("values"), list):
        raise StudyError(f"study file {path}: `sweep` needs `key` and a list of `values`")
    targets = sweep.get("conditions") or [name for name in conditions if name != reference]
    for name in targets:
        if name not in conditions:
            raise StudyError(f"study file {path}: sweep.conditions names {name!r}, not a condition")
    expanded: dict[str, list[str]] = {}
    for name, opts in conditions.items():
        if name not in targets:
            expanded[name] = opts
            continue
        for value in sweep["values"]:
            expanded[f"{name}@{sweep['key']}={_value_text(value)}"] = opts + [str(sweep["key"]), _value_text(value)]
    return expanded


def plot_seeds(value: Any, seeds: list[int], where: str) -> list[int]:
    """The seeds whose figures a study draws (each into plots/seed<N>/): "first" (the default), "all", or a list."""
    if value == "first":
        return seeds[:1]
    if value == "all":
        return list(seeds)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list) and value and all(v in seeds for v in value):
        return list(value)
    raise StudyError(f"{where} is {value!r}; use first, all, or a list of the study's seeds ({seeds})")


# ---------------------------------------------------------------------------------------------- run status


def resolved_config(run: PlannedRun) -> dict[str, Any]:
    """The flattened config tools/our_train.py would resolve for `run` (no data read)."""
    from makd.config import load_cfg

    cfg = load_cfg(run.argv[0], list(run.argv[1:]))
    return flatten_tree(yaml.safe_load(cfg.dump()))


def config_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(wanted))
    return [k for k in keys if saved.get(k) != wanted.get(k) and not k.startswith(RESULT_NEUTRAL_PREFIXES)]


def run_status(run: PlannedRun, wanted: dict[str, Any]) -> str:
    """'done' (summary.json), 'resume' (latest.pth, no summary) or 'todo'; StudyError if the folder holds another
    configuration's run."""
    has_summary = (run.run_dir / "summary.json").exists()
    has_latest = (run.run_dir / "latest.pth").exists()
    if not (has_summary or has_latest):
        return "todo"
    config_path = run.run_dir / "config.yaml"
    if config_path.exists():
        different = config_differences(read_config(config_path), wanted)
        if different:
            raise StudyError(
                f"run folder {run.run_dir} holds a run of another configuration (differs in "
                f"{', '.join(different[:5])}); delete that folder or set another `output` in the study file"
            )
    return "done" if has_summary else "resume"


# ---------------------------------------------------------------------------------------------- running


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the training process gets SIGTERM when the study process dies (even by SIGKILL), so a killed study
    never leaves a run training on its own while the next study invocation resumes the same folder."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """An exclusive lock on the run folder (fcntl), held while the run trains; yields False if someone else holds it
    (another study process, a job of the same study on a cluster node sharing the file system)."""
    import fcntl

    # Next to the run folder, not in it: the trainer refuses a run folder holding files it did not write.
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.study.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def train_command(run: PlannedRun, resume: bool) -> list[str]:
    return [sys.executable, str(TRAIN_SCRIPT), *run.argv, *(["--resume"] if resume else [])]


def child_threads(jobs: int, cores: int | None = None, load: float | None = None) -> int:
    """Threads per training: the cores split between the N parallel jobs, but 1 on a machine already busy
    (1-minute load average >= cores). Starved OpenMP threads spin in barriers: on 2 cores shared with other
    work, 2 threads trained the demo at 4 img/s, 1 thread at 71 img/s."""
    cores = cores or os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None else load
    return 1 if load >= cores else max(1, cores // max(1, jobs))


def _child_env(jobs: int, threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:  # the caller fixed it (the demo: its numbers are those of this thread count)
        env["OMP_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in env:  # the user's setting wins
        env["OMP_NUM_THREADS"] = str(child_threads(jobs))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class _Running:
    run: PlannedRun
    process: subprocess.Popen
    lock: contextlib.ExitStack
    started: float
    resumed: bool


def execute_runs(
    pending: Sequence[tuple[PlannedRun, str]],
    jobs: int = 1,
    log: Callable[[str], None] = print,
    *,
    threads: int | None = None,
    progress: RunProgress | None = None,
) -> tuple[list[PlannedRun], list[tuple[PlannedRun, int]]]:
    """Train the pending (run, status) pairs, `jobs` at a time; returns (finished, failed with exit codes).

    Each run's output goes to <run_dir>.log next to the run folder (appended: a resumed run keeps its history). On
    Ctrl-C or SIGTERM the running trainings are stopped (SIGTERM: each keeps its last finished epoch) and the
    KeyboardInterrupt (makd.errors.Terminated for SIGTERM) propagates.
    `threads` fixes OMP_NUM_THREADS of every training (default: child_threads). The log says which run of how many
    starts, and when one ends, its wall and CPU seconds and the time left; `progress` (default: a new one) keeps
    those costs for the caller.
    """
    queue = list(pending)
    running: list[_Running] = []
    finished: list[PlannedRun] = []
    failed: list[tuple[PlannedRun, int]] = []
    env = _child_env(jobs, threads)
    progress = progress if progress is not None else RunProgress(len(queue), jobs)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while queue or running:
            while queue and len(running) < max(1, jobs):
                run, status = queue.pop(0)
                stack = contextlib.ExitStack()
                if not stack.enter_context(run_lock(run.run_dir)):
                    stack.close()
                    log(f"[study] {run.label}: skipped, another process is training it")
                    progress.skipped(run.label)
                    continue
                resume = status == "resume"
                log_file = stack.enter_context(open(run.log_path, "ab"))
                command = train_command(run, resume)
                log_file.write(f"\n$ {shlex.join(command)}\n".encode())
                log_file.flush()
                process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
                verb = "resuming" if resume else "training"
                log(f"[study] {progress.started(run.label, verb)} (log {run.log_path})")
                running.append(_Running(run, process, stack, time.perf_counter(), resume))
            time.sleep(0.2)
            for item in list(running):
                # Children's CPU time is counted when a child is reaped, so the usage around the poll that reaps
                # it is that run's alone, however many run beside it.
                before = _children_cpu_seconds()
                code = item.process.poll()
                if code is None:
                    continue
                cpu = _children_cpu_seconds() - before
                running.remove(item)
                item.lock.close()
                ok = code == 0 and (item.run.run_dir / "summary.json").exists()
                cost = progress.finished(item.run.label, cpu, ok)
                if ok:
                    finished.append(item.run)
                    log(
                        f"[study] {item.run.label}: finished in {cost.wall_seconds:.0f}s (CPU {cpu:.0f}s); "
                        f"{progress.status()}"
                    )
                else:
                    failed.append((item.run, code))
                    log(
                        f"[study] {item.run.label}: FAILED with exit code {code} after {cost.wall_seconds:.0f}s; "
                        f"{progress.status()}; last lines of {item.run.log_path}:\n{_tail(item.run.log_path)}"
                    )
    except KeyboardInterrupt:
        for item in running:
            item.process.terminate()
        for item in running:
            try:
                item.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                item.process.kill()
            item.lock.close()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return finished, failed


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's reaped children (and those they reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _raise_interrupt(_signum, _frame):
    raise Terminated()


STUDY_LOCK = ".makd-study.lock"


def study_lock(study: Study) -> contextlib.AbstractContextManager:
    """One study invocation at a time writes a study folder (its results tables and plots, and the runs it starts):
    the exclusive lock `<output>/.makd-study.lock`. `--run-one` jobs do not take it (a job array runs many at once;
    each run folder has its own lock), nor does `--print-commands`, which writes nothing."""
    return exclusive_lock(study.output / STUDY_LOCK, f"study folder {study.output}")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    # tqdm redraws with carriage returns; keep what the last redraw shows.
    rows = [row.split("\r")[-1] for row in text.splitlines() if row.strip()]
    return "\n".join("    " + row for row in rows[-lines:])


# ---------------------------------------------------------------------------------------------- the study


def plan(study: Study) -> list[tuple[PlannedRun, str, dict[str, Any]]]:
    """Every run with its status and resolved config; config errors (bad key/value) surface here, before any run."""
    planned = []
    for run in study.runs():
        wanted = resolved_config(run)
        planned.append((run, run_status(run, wanted), wanted))
    return planned


def finished_groups(study: Study) -> dict[str, list[RunResult]]:
    """Finished runs per condition, in the study's order (conditions without a finished run left out)."""
    groups: dict[str, list[RunResult]] = {}
    for run in study.runs():
        if (run.run_dir / "summary.json").exists():
            groups.setdefault(run.condition, []).append(read_run(run.run_dir))
    return groups


def print_commands(study: Study, study_path: str) -> list[str]:
    """One shell line per unfinished run (`tools/study.py STUDY --run-one CONDITION SEED`), for a job array; each
    line decides on its own, when it runs, whether to start or resume."""
    lines = []
    for run, status, _ in plan(study):
        if status != "done":
            lines.append(
                shlex.join([sys.executable, str(STUDY_SCRIPT), study_path, "--run-one", run.condition, str(run.seed)])
            )
    return lines
