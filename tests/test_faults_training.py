"""Fault injection on stage 3: the trainer is killed with SIGKILL at chosen points (mid-epoch, while writing
latest.pth, best.pth or summary.json), interrupted with Ctrl-C, or made to diverge; then every file left in
the run folder must be loadable and finite, and `--resume` must end with the metrics and weights of an
unbroken run.

The kill points are found by watching the run folder: makd.atomic_files writes every file as a temp file
".<name>.<random>.tmp" next to it, so while that temp file exists the process is inside that write. A real
write of summary.json lasts milliseconds, so the child (a fork of this process) has that one write stall
halfway, as on a slow disk, until it is killed; no code path of makd is changed for the test.
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_aspects_for, write_release_split
from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "our_train.py"
METRIC_KEYS = ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last", "test_aspect_mae_last")
TIMING_KEYS = ("train_images_per_s", "epoch_seconds")
EPOCHS = 3


our_train = load_tool("our_train")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    classes = ["Abyssinian", "american_bulldog", "Bengal"]
    train_ids = write_release_split(root / "train", classes, per_class=8, seed=0)
    test_ids = write_release_split(root / "test", classes, per_class=4, seed=1)
    write_aspects_for(root / "aspects.json", train_ids, num_aspects=5, seed=2)
    write_aspects_for(root / "test_aspects.json", test_ids, num_aspects=5, seed=3)
    (root / "faults.yaml").write_text(
        yaml.safe_dump(
            {
                "DATASET": {
                    "NUM_CLASS": 3,
                    "ASPECT_JSON": str(root / "aspects.json"),
                    "TEST_ASPECT_JSON": str(root / "test_aspects.json"),
                    "TRAIN_IMAGE_PATH": str(root / "train"),
                    "TEST_IMAGE_PATH": str(root / "test"),
                    "NUM_WORKERS": 0,
                    "IMAGE_SIZE": 32,
                    "RESIZE_RATIO": 1.0,
                    "TEST": {"BATCH_SIZE": 12},
                },
                "DISTILLER": {"TYPE": "MaKD", "STUDENT": "wrn_40_2"},
                "SOLVER": {"BATCH_SIZE": 8, "EPOCHS": EPOCHS, "LR": 0.05, "LR_DECAY_STAGES": [2]},
                "MaKD": {"ASPECT_NUM": 5},
                "LOG": {"SAVE_CHECKPOINT_FREQ": 1, "TENSORBOARD_FREQ": 1},
            }
        )
    )
    return root


def argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [str(data / "faults.yaml"), "OUTPUT_DIR", str(out), *extra]


@pytest.fixture(scope="module")
def unbroken(data) -> Path:
    out = data / "unbroken"
    assert our_train.main(argv(data, out)) == 0
    return out


def temp_files(names: list[str], target: str = "") -> list[str]:
    return [n for n in names if n.startswith(f".{target}") and n.endswith(".tmp")]


def listing(out: Path) -> list[str]:
    try:
        return os.listdir(out)
    except FileNotFoundError:
        return []


class Trainer:
    """tools/our_train.py running in a child process, as started from the shell.

    `forked` children are forked from this process after torch is imported (no interpreter start-up, the
    same one-thread arithmetic as the in-process runs, so weights compare bit for bit); the Ctrl-C test
    starts the real script instead, to check the hint it prints.
    """

    def __init__(self, args: list[str], forked: bool = True, stall: str = "") -> None:
        self.stderr_path = Path(args[args.index("OUTPUT_DIR") + 1] + ".stderr")
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        if forked:
            import multiprocessing

            self.process = multiprocessing.get_context("fork").Process(
                target=_child, args=(args, self.stderr_path, stall)
            )
            self.process.start()
            self.pid = self.process.pid
        else:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["OMP_NUM_THREADS"] = "1"
            with open(self.stderr_path, "w") as err:
                self.process = subprocess.Popen(
                    [sys.executable, str(TOOL), *args], env=env, stdout=subprocess.DEVNULL, stderr=err
                )
            self.pid = self.process.pid

    def running(self) -> bool:
        if isinstance(self.process, subprocess.Popen):
            return self.process.poll() is None
        return self.process.is_alive()

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def wait(self, timeout: float = 240) -> int:
        if isinstance(self.process, subprocess.Popen):
            return self.process.wait(timeout)
        self.process.join(timeout)
        return self.process.exitcode

    def stderr(self) -> str:
        return self.stderr_path.read_text()


class _StallingFile:
    """A file that writes the first half of the first chunk, then waits: the write is caught half done."""

    def __init__(self, fh) -> None:
        self.fh, self.stalled = fh, False

    def write(self, data) -> int:
        if self.stalled:
            return self.fh.write(data)
        half = max(1, len(data) // 2)
        self.fh.write(data[:half])
        self.fh.flush()
        self.stalled = True
        time.sleep(60)  # the test kills the process during this wait
        return half + self.fh.write(data[half:])

    def __getattr__(self, name):
        return getattr(self.fh, name)


def _stall_writes_of(spec: str) -> None:
    """In the child only: write number n (1-based) of run file `name` ("name@n") stalls halfway (a slow disk)."""
    import makd.atomic_files as atomic_files

    name, _, nth = spec.partition("@")
    real, seen = atomic_files.atomic_write, []

    def atomic_write(path, write):
        if Path(path).name == name:
            seen.append(path)
            if len(seen) == int(nth or 1):
                return real(path, lambda fh: write(_StallingFile(fh)))
        return real(path, write)

    atomic_files.atomic_write = atomic_write


def _child(args: list[str], stderr_path: Path, stall: str) -> None:
    if stall:
        _stall_writes_of(stall)
    with open(stderr_path, "w") as err, open(os.devnull, "w") as null:
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = null, err
        sys.argv = [str(TOOL), *args]
        code = our_train.main(args)
        err.flush()
    os._exit(code)


def start(data: Path, out: Path, *extra: str, forked: bool = True, stall: str = "") -> Trainer:
    return Trainer(argv(data, out, *extra), forked, stall)


def kill_when(trainer: Trainer, out: Path, ready, delay: float = 0.0, timeout: float = 240) -> list[str]:
    """SIGKILL the trainer as soon as `ready(names in out)` holds (after `delay` s); returns the folder after."""
    deadline = time.monotonic() + timeout
    while trainer.running() and time.monotonic() < deadline:
        if ready(listing(out)):
            if delay:
                time.sleep(delay)
            trainer.signal(signal.SIGKILL)
            assert trainer.wait() == -signal.SIGKILL
            return listing(out)
    code = trainer.wait(timeout=10) if not trainer.running() else None
    if trainer.running():
        trainer.signal(signal.SIGKILL)
    pytest.fail(f"the kill point was never reached (exit {code}): {trainer.stderr()[-1500:]}")


def assert_everything_loadable(out: Path, allow_temp: bool = False) -> None:
    """Every file of the run folder can be read by its reader and holds only finite numbers."""
    for path in sorted(out.rglob("*")):
        if path.is_dir():
            continue
        name = path.name
        if name.endswith(".tmp"):
            assert allow_temp, f"left-over temp file {name}"
            continue
        if name.endswith(".pth"):
            state = torch.load(path, weights_only=False)
            tensors = [*state["model"].values(), *state.get("distiller_extra", {}).values()]
            assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()), name
        elif name.endswith(".jsonl"):
            for line in path.read_text().splitlines():
                json.loads(line, parse_constant=_refuse_constant)
        elif name.endswith(".json"):
            json.loads(path.read_text(), parse_constant=_refuse_constant)
        elif name.endswith(".yaml"):
            assert isinstance(yaml.safe_load(path.read_text()), dict)
        elif name == ".makd.lock":  # the killed run's lock file: its holder, no longer holding it (kernel-released)
            assert set(json.loads(path.read_text())) == {"pid", "host", "since", "command"}
        elif name.startswith("events.out.tfevents"):
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

            assert sum(1 for _ in EventFileLoader(str(path)).Load()) >= 1
        else:
            pytest.fail(f"unexpected file {path}")


def _refuse_constant(name: str):
    raise AssertionError(f"non-strict JSON constant {name}")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["model"]


def assert_same_as_unbroken(out: Path, unbroken: Path) -> None:
    summary, reference = (json.loads((p / "summary.json").read_text()) for p in (out, unbroken))
    assert {k: summary[k] for k in METRIC_KEYS} == {k: reference[k] for k in METRIC_KEYS}
    for name in ("student.pth", "best.pth", "latest.pth"):
        a, b = weights(out / name), weights(unbroken / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows, reference_rows = (
        [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in (p / "metrics.jsonl").open()]
        for p in (out, unbroken)
    )
    assert rows == reference_rows


def resume_and_check(data: Path, out: Path, unbroken: Path) -> None:
    assert our_train.main(argv(data, out, "--resume")) == 0
    assert_everything_loadable(out)
    assert_same_as_unbroken(out, unbroken)


def test_killed_mid_epoch_then_resumed_equals_an_unbroken_run(data, unbroken):
    out = data / "mid_epoch"
    delay = random.Random(7).uniform(0.05, 0.4)  # a random point of epoch 2 (an epoch takes ~0.5-1 s here)
    after = kill_when(start(data, out), out, lambda names: "latest.pth" in names, delay=delay)
    assert "summary.json" not in after
    assert_everything_loadable(out, allow_temp=True)
    resume_and_check(data, out, unbroken)


def test_killed_while_writing_latest_keeps_the_previous_one(data, unbroken):
    out = data / "latest_write"
    # The second write of latest.pth (epoch 2) stalls halfway while the epoch-1 file is in place.
    trainer = start(data, out, stall="latest.pth@2")
    after = kill_when(trainer, out, lambda names: "latest.pth" in names and temp_files(names, "latest.pth"))
    assert temp_files(after, "latest.pth"), "the kill came after the write finished"
    assert torch.load(out / "latest.pth", weights_only=False)["epoch"] == 1
    assert_everything_loadable(out, allow_temp=True)
    resume_and_check(data, out, unbroken)


def test_killed_while_writing_best_is_repaired_on_resume(data, unbroken):
    out = data / "best_write"
    after = kill_when(start(data, out, stall="best.pth"), out, lambda names: bool(temp_files(names, "best.pth")))
    assert temp_files(after, "best.pth"), "the kill came after the write finished"
    assert "best.pth" not in after and torch.load(out / "latest.pth", weights_only=False)["epoch"] == 1
    assert_everything_loadable(out, allow_temp=True)
    resume_and_check(data, out, unbroken)  # best.pth rebuilt from latest.pth (same epoch), then the run goes on


def test_killed_while_writing_summary_then_resume_finishes(data, unbroken):
    out = data / "summary_write"
    trainer = start(data, out, stall="summary.json")
    after = kill_when(trainer, out, lambda names: bool(temp_files(names, "summary.json")))
    assert "summary.json" not in after  # a summary is either whole or absent
    assert torch.load(out / "latest.pth", weights_only=False)["epoch"] == EPOCHS
    assert_everything_loadable(out, allow_temp=True)
    resume_and_check(data, out, unbroken)


def test_ctrl_c_prints_the_command_that_resumes(data, unbroken):
    out = data / "ctrl_c"
    trainer = start(data, out, forked=False)  # the real script in a fresh interpreter
    deadline = time.monotonic() + 240
    while "latest.pth" not in listing(out) and trainer.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    trainer.signal(signal.SIGINT)
    assert trainer.wait() == 130, trainer.stderr()[-1500:]
    last = trainer.stderr().strip().splitlines()[-1]
    prefix = "interrupted; continue with: python "
    assert last.startswith(prefix), last
    command = shlex.split(last[len(prefix) :])
    assert command == [str(TOOL), *argv(data, out), "--resume"]
    resume_and_check(data, out, unbroken)  # the printed command, run as printed (in this process)


@pytest.mark.parametrize(
    "batch_size, lr_rate",
    [(24, "1e20"), (12, "1e10"), (12, "1e38")],
    ids=["nan-eval-one-step", "nan-eval-two-steps", "nan-loss"],
)
def test_divergence_leaves_only_finite_loadable_files(data, batch_size, lr_rate, capsys):
    out = data / f"diverge_{batch_size}_{lr_rate}"
    # Epoch 1 trains normally; then the learning rate is multiplied by lr_rate and the model diverges.
    code = our_train.main(
        argv(
            data,
            out,
            "DISTILLER.STUDENT",
            "resnet8x4",
            "SOLVER.BATCH_SIZE",
            str(batch_size),
            "SOLVER.LR_DECAY_STAGES",
            "[1]",
            "SOLVER.LR_DECAY_RATE",
            lr_rate,
        )
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: non-finite") and "the last good latest.pth (epoch 1) is kept" in err[-1]
    assert_everything_loadable(out)
    assert torch.load(out / "latest.pth", weights_only=False)["epoch"] == 1
    assert torch.load(out / "best.pth", weights_only=False)["epoch"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and math.isfinite(rows[0]["test_loss"])
    assert not (out / "summary.json").exists()
