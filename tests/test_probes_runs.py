"""Probes of issue 20, items 1, 2, 3, 6 and 7: runs you can trust, tried as a careless or unlucky user would.

Each probe runs the real commands (tools/our_train.py, tools/plot.py, tools/study.py, stage 2 against a real
OpenAI-compatible server on loopback, torchrun with a real 2-process gloo group) on a tiny data set, and judges
the outcome the way the issue counts them:

- "data loss"       a file the user had (or the run had finished) was changed or removed;
- "traceback"       a Python traceback reached the user;
- "silent-harmful"  the command went on (or exit 0) where it had to stop, or left a trace of a refused run;
- "unclear"         it stopped, but not with the exit code and the one line that names the cause;
- "ok"              the expected exit code, one line naming the cause (none for a probe that must succeed), and
                    nothing of the user's changed.

Every probe asserts "ok" (the exit code, the words of its one line, and that the user's files are byte-identical).
With MAKD_PROBE_REPORT=<file> each probe also appends {"probe", "item", "outcome"} to that file before asserting,
so running this file against another checkout (e.g. main before the change) counts the outcomes there; with
MAKD_PROBE_COUNT_ONLY=1 as well, a probe that is not "ok" does not stop its test's later probes.

The classes (items) and their members:
1 a run folder knows what it wrote: a new run over a user's checkpoints, --overwrite with a user's figure in plots/,
  --overwrite / --resume over a run file the user replaced, a refused run that would leave a folder, plot.py's
  default folder surviving a later --overwrite;
2 one writer at a time: two trainings in one folder, plot.py into a folder being trained, two stage-2 runs on one
  output (the second a requeued --resume), two invocations of one study, a lock left by a killed run;
3 resume in a changed world: the aspect file, the questions file or the training images changed, the number of
  processes changed;
6 environment failures: disk full and a file-size limit while a checkpoint is written, disk full while stage 2
  writes its files, a read-only run folder, an output path under a file, a folder where a file belongs and the reverse;
7 preemption: SIGTERM to a training (its whole process group, DataLoader workers included), to stage 2, to a study;
  a user error under torchrun printed once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import yaml
from conftest import write_aspects_for, write_release_split
from tool_modules import load_tool, run_on_two_processes

from makd.commands.stage2 import main as stage2_main
from makd.formats.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "tools" / "our_train.py"
STAGE2 = REPO / "InternVL_logits" / "make_makd_logits_json.py"
PY = sys.executable
IMAGES = 4  # stage-2 probes: images of the scripted server (tests/test_mllm_openai.py), 3 questions each
our_train, plot_tool, report_tool = load_tool("our_train"), load_tool("plot"), load_tool("report")
study_tool = load_tool("study")


# ------------------------------------------------------------------------------------------------- the harness
def tree(root: Path) -> dict[str, str]:
    """Every file under root (relative name -> sha256), hidden lock files aside: "nothing changed" = equal trees."""
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


class Ran:
    """How a command ended: exit code (None: the probe had to stop it) and its stderr."""

    def __init__(self, code: int | None, err: str) -> None:
        self.code, self.err = code, err

    @property
    def lines(self) -> list[str]:
        """The lines a user reads as the outcome (errors, interruptions), progress and warnings aside."""
        return [
            line for line in self.err.splitlines() if line.startswith(("error", "terminated", "interrupted"))
        ]


def judge(probe: str, item: int, ran: Ran, code: int, words: list[str], kept: bool = True, clean: bool = True) -> None:
    """Classify the outcome (see the module docstring), record it when asked, and assert it is "ok".

    `kept`: nothing the user had (their files, a finished run's files) changed; `clean`: no other trace of what had to
    be refused (a folder left, a run continued, a file written where it must not be)."""
    if not kept:
        outcome = "data loss"
    elif "Traceback (most recent call last)" in ran.err:
        outcome = "traceback"
    elif ran.code != code:
        outcome = "silent-harmful" if ran.code in (0, None) else "unclear"
    elif len(ran.lines) != (0 if code == 0 else 1) or not all(word in ran.lines[0] for word in words):
        outcome = "unclear"
    elif not clean:
        outcome = "silent-harmful"
    else:
        outcome = "ok"
    report = os.environ.get("MAKD_PROBE_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(json.dumps({"probe": probe, "item": item, "outcome": outcome}) + "\n")
        if os.environ.get("MAKD_PROBE_COUNT_ONLY"):  # counting another checkout: go on to the test's next probes
            return
    assert outcome == "ok", (outcome, ran.code, ran.err[-3000:])


def run_in_process(main, argv: list[str]) -> Ran:
    """A command's main(argv) in this process, stderr captured (an escaping exception counts as a traceback)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except Exception:  # noqa: BLE001 - a probe records whatever escapes
            err.write(traceback.format_exc())
            code = 1
    return Ran(code, err.getvalue())


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAKD_PROBE_REPORT")}
    return {**base, "OMP_NUM_THREADS": "1", **extra}


def start(argv: list, log: Path, preexec=None, new_group: bool = False) -> subprocess.Popen:
    """A command as started from a shell (its checkout's own makd), its output (stdout and stderr) to `log`."""
    with open(log, "w") as err:
        return subprocess.Popen(
            [PY, *map(str, argv)], env=env(), stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=preexec, start_new_session=new_group,
        )  # fmt: skip


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> Ran:
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = None
    return Ran(code, log.read_text())


def run(argv: list, log: Path, timeout: float = 240, preexec=None) -> Ran:
    return finish(start(argv, log, preexec), log, timeout)


def wait_for(condition, timeout: float = 180, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return condition()
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------------------- the data
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probes")
    classes = ["Abyssinian", "american_bulldog", "Bengal"]
    train_ids = write_release_split(root / "train", classes, per_class=8, seed=0)
    write_release_split(root / "test", classes, per_class=4, seed=1)
    write_aspects_for(root / "aspects.json", train_ids, num_aspects=5, seed=2)
    (root / "questions.txt").write_text("".join(f"Does it show feature {q}?\n" for q in range(5)))
    (root / "probe.yaml").write_text(
        yaml.safe_dump(
            {
                "DATASET": {
                    "NUM_CLASS": 3,
                    "ASPECT_JSON": str(root / "aspects.json"),
                    "QUESTIONS": str(root / "questions.txt"),
                    "TRAIN_IMAGE_PATH": str(root / "train"),
                    "TEST_IMAGE_PATH": str(root / "test"),
                    "NUM_WORKERS": 0,
                    "IMAGE_SIZE": 32,
                    "RESIZE_RATIO": 1.0,
                    "TEST": {"BATCH_SIZE": 12},
                },
                "DISTILLER": {"TYPE": "MaKD", "STUDENT": "resnet8x4"},
                "SOLVER": {"BATCH_SIZE": 8, "EPOCHS": 2, "LR": 0.05},
                "MaKD": {"ASPECT_NUM": 5},
                "LOG": {"SAVE_CHECKPOINT_FREQ": 1},
                "NUM_THREADS": 1,
            }
        )
    )
    return root


def config(data: Path) -> str:
    return str(data / "probe.yaml")


@pytest.fixture(scope="module")
def finished(data) -> Path:
    """A finished 2-epoch run (copied by each probe that changes it)."""
    out = data / "finished"
    assert our_train.main([config(data), "OUTPUT_DIR", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def stopped(data) -> Path:
    """A 3-epoch run stopped after epoch 1 (copied by each probe that resumes it)."""
    out = data / "stopped"
    assert our_train.main([config(data), "OUTPUT_DIR", str(out), "SOLVER.EPOCHS", "3", "--stop-after-epoch", "1"]) == 0
    return out


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def train(data: Path, out: Path, *extra) -> Ran:
    return run_in_process(our_train.main, [config(data), "OUTPUT_DIR", out, *extra])


# ======================================================================= 1: a run folder knows what it wrote
def test_a_new_run_never_replaces_a_users_checkpoints(data, finished, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("student.pth", "best.pth", "epoch_5.pth"):  # the user's own files, makd's names, no latest.pth
        shutil.copy(finished / "student.pth", out / name)
    before = tree(out)
    ran = train(data, out)
    words = [f"run folder {out} holds best.pth", "no manifest.json", "nothing was changed"]
    judge("new run over a user's student.pth/best.pth/epoch_5.pth", 1, ran, 2, words, tree(out) == before)


def test_overwrite_never_removes_a_users_figure_or_a_replaced_run_file(data, finished, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    (out / "plots").mkdir()
    (out / "plots" / "my_figure.png").write_bytes(b"the user's figure")
    before = tree(out)
    ran = train(data, out, "--overwrite")
    judge("--overwrite with the user's figure in plots/", 1, ran, 2,
          ["holds plots/my_figure.png", "did not write", "nothing was changed"], tree(out) == before)  # fmt: skip

    out = copy_run(finished, tmp_path / "run2")
    (out / "student.pth").write_bytes(b"the user's own student, saved under the run's name")
    before = tree(out)
    ran = train(data, out, "--overwrite")
    judge("--overwrite after the user replaced student.pth", 1, ran, 2, ["holds student.pth", "changed since"],
          tree(out) == before)  # fmt: skip


def test_resume_never_writes_over_a_file_the_user_put_under_a_run_name(data, stopped, tmp_path):
    out = copy_run(stopped, tmp_path / "run")
    (out / "summary.json").write_text('{"mine": "the summary of another run"}\n')
    before = tree(out)
    ran = train(data, out, "SOLVER.EPOCHS", "3", "--resume")
    judge("--resume with the user's summary.json in the folder", 1, ran, 2, ["holds summary.json", "did not write"],
          tree(out) == before)  # fmt: skip


def test_a_refused_run_leaves_no_folder_behind(data, tmp_path):
    out = tmp_path / "new" / "nested" / "run"
    ran = train(data, out, "MaKD.ASPECT_NUM", "7")  # refused by the data check, after the folder was locked
    left = (tmp_path / "new").exists()
    judge("refused run into a new nested OUTPUT_DIR", 1, ran, 2, ["MaKD.ASPECT_NUM is 7"], clean=not left)


def test_plots_go_to_a_folder_of_their_own_that_overwrite_does_not_touch(data, finished, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    assert run_in_process(plot_tool.main, [out, "--what", "curves"]).code == 0
    figures = [p for p in tmp_path.rglob("training_curves.png")]
    before = {p: sha256_file(p) for p in figures}
    ran = train(data, out, "--overwrite", "SOLVER.EPOCHS", "1")
    kept = bool(figures) and all(p.exists() and sha256_file(p) == h for p, h in before.items())
    judge("plot.py's default folder, then --overwrite of the run", 1, ran, 0, [], kept and (ran.code == 0))
    assert figures == [tmp_path / "run.plots" / "training_curves.png"]


# ======================================================================= 2: one writer at a time
def _lock_or_config(out: Path) -> bool:
    return (out / ".makd.lock").exists() or (out / "config.yaml").exists()


def test_two_trainings_into_one_folder_and_a_plot_into_it_are_refused(data, tmp_path):
    out = tmp_path / "run"
    first = start([TRAIN, config(data), "OUTPUT_DIR", out, "SOLVER.EPOCHS", "60"], tmp_path / "first.err")
    try:
        assert wait_for(lambda: _lock_or_config(out), process=first), (tmp_path / "first.err").read_text()
        ran = train(data, out, "SOLVER.EPOCHS", "60")  # in this process: the lock is the other process's
        host = socket.gethostname()
        words = [f"run folder {out} is in use by pid {first.pid} on {host} since"]
        judge("a second training into the folder of a running one", 2, ran, 2, words, clean=first.poll() is None)
        assert wait_for(lambda: (out / "latest.pth").exists(), process=first)
        ran = run_in_process(plot_tool.main, [out, "--what", "curves", "--out", out / "figures"])
        judge("plot.py --out into the folder of a running training", 2, ran, 2,
              [f"is in use by pid {first.pid}"], clean=not (out / "figures").exists())  # fmt: skip
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)


def test_a_lock_left_by_a_killed_training_needs_no_cleanup(data, tmp_path):
    out = tmp_path / "run"
    killed = start([TRAIN, config(data), "OUTPUT_DIR", out, "SOLVER.EPOCHS", "60"], tmp_path / "killed.err")
    assert wait_for(lambda: (out / "latest.pth").exists(), process=killed)
    killed.kill()
    killed.wait()
    left = (out / ".makd.lock").exists()  # the file stays; the kernel released the lock with the process
    ran = train(data, out, "SOLVER.EPOCHS", "60", "--stop-after-epoch", "1", "--resume")
    judge("--resume after SIGKILL, the lock file left behind", 2, ran, 0, [], clean=ran.code == 0)
    assert left


class SlowServer:
    """tests/test_mllm_openai.py's scripted server, answering each request after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        from test_mllm_openai import FakeServer

        self.server = FakeServer()
        original = self.server.reply

        def slow(body):
            time.sleep(delay)
            return original(body)

        self.server.reply = slow

    def __enter__(self):
        return self.server.__enter__()

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


@pytest.fixture
def images(tmp_path) -> dict:
    import numpy as np
    from PIL import Image
    from test_mllm_openai import QUESTIONS

    root = tmp_path / "images"
    root.mkdir()
    for i in range(IMAGES):  # the server's P(yes) grows with the image's red value; 4 images keep it below 0.9
        Image.fromarray(np.full((10, 20, 3), (10 * i, 50, 60), dtype=np.uint8)).save(root / f"img_{i}.png")
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(q + "\n" for q in QUESTIONS))
    return {"root": root, "questions": questions}


def stage2_argv(server, images: dict, output: Path, *extra) -> list:
    return [STAGE2, "--backend", "openai", "--base-url", server.url, "--model", "served-internvl", "--questions",
            images["questions"], "--images", images["root"], "--output", output, "--top-logprobs", "5",
            "--concurrency", "1", "--images-per-step", "1", "--max-retries", "1", "--no-progress", *extra]  # fmt: skip


def partial_rows(output: Path) -> int:
    try:
        return (Path(str(output) + ".partial.jsonl")).read_bytes().count(b'"p":')
    except FileNotFoundError:
        return 0


def test_a_second_stage2_run_on_one_output_is_refused(images, tmp_path):
    output = tmp_path / "aspects.json"
    with SlowServer(delay=0.1) as server:
        first = start(stage2_argv(server, images, output), tmp_path / "first.err")
        assert wait_for(lambda: partial_rows(output) >= 1, process=first), (tmp_path / "first.err").read_text()
        # A requeued job of the same shard: --resume on the partial file the first run is still appending to.
        ran = run_in_process(stage2_main, stage2_argv(server, images, output, "--resume")[1:])
        judge("a second stage-2 run (--resume) on the output of a running one", 2, ran, 2,
              [f"stage-2 output {output} is in use by pid {first.pid}"], clean=first.poll() is None)  # fmt: skip
        assert finish(first, tmp_path / "first.err").code == 0
    rows = json.loads(output.read_text())
    assert sorted(rows) == [f"img_{i}" for i in range(IMAGES)]


def write_study(data: Path, tmp_path: Path, epochs: int) -> Path:
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "probe", "base": config(data), "output": str(tmp_path / "study"),
                                     "seeds": [0], "overrides": {"SOLVER.EPOCHS": epochs},
                                     "conditions": {"makd": {}}}))  # fmt: skip
    return study


def test_a_second_invocation_of_a_running_study_is_refused(data, tmp_path):
    study = write_study(data, tmp_path, epochs=60)
    first = start([REPO / "tools" / "study.py", study], tmp_path / "first.err")
    try:
        assert wait_for(lambda: (tmp_path / "study" / "makd" / "seed0" / "latest.pth").exists(), process=first)
        ran = run_in_process(study_tool.main, [study])
        judge("a second invocation of a running study", 2, ran, 2,
              [f"study folder {tmp_path / 'study'} is in use by pid {first.pid}"],
              not (tmp_path / "study" / "results.md").exists())  # fmt: skip
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)


# ======================================================================= 3: resume in a changed world
@pytest.mark.parametrize("change", ["aspect file", "questions file", "training images"])
def test_resume_refuses_a_changed_input(data, stopped, tmp_path, change):
    copied = tmp_path / "data"
    shutil.copytree(data, copied, ignore=shutil.ignore_patterns("finished", "stopped", "*.yaml"))
    cfg = tmp_path / "probe.yaml"
    cfg.write_text((data / "probe.yaml").read_text().replace(str(data), str(copied)))
    out = tmp_path / "run"
    assert our_train.main([str(cfg), "OUTPUT_DIR", str(out), "SOLVER.EPOCHS", "3", "--stop-after-epoch", "1"]) == 0
    if change == "aspect file":
        rows = json.loads((copied / "aspects.json").read_text())
        rows["Bengal_2_0"][0] = round(1 - rows["Bengal_2_0"][0], 4)  # one answer of one image
        (copied / "aspects.json").write_text(json.dumps(rows))
        words = ["DATASET.ASPECT_JSON", "changed since the run started"]
    elif change == "questions file":
        (copied / "questions.txt").write_text((copied / "questions.txt").read_text().replace("feature 3", "part 3"))
        words = ["DATASET.QUESTIONS", "changed since the run started"]
    else:
        (copied / "train" / "Bengal_2_7.png").unlink()  # its aspect row stays: nothing else would notice
        words = ["the train images changed (24 at the start, 23 now)"]
    before = tree(out)
    ran = run_in_process(our_train.main, [cfg, "OUTPUT_DIR", out, "SOLVER.EPOCHS", "3", "--resume"])
    judge(f"--resume after the {change} changed", 3, ran, 2, [*words, "start over with --overwrite"],
          clean=tree(out) == before)  # fmt: skip


def test_resume_refuses_another_number_of_processes(data, tmp_path):
    out = tmp_path / "run"
    started = run_on_two_processes("our_train", [config(data), "OUTPUT_DIR", out, "SOLVER.EPOCHS", "3",
                                                 "--stop-after-epoch", "1"], timeout=300)  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    before = tree(out)
    ran = train(data, out, "SOLVER.EPOCHS", "3", "--resume")
    judge("--resume of a 2-process run with 1 process", 3, ran, 2,
          ["the number of processes (2 at the start, global batch 16; 1 now, global batch 8)",
           "torchrun --nproc_per_node 2"], clean=tree(out) == before)  # fmt: skip


# ======================================================================= 6: environment failures
@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of `size` mounted on `folder` (root only; skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("a real full disk needs a tmpfs mount (root in a container that allows it)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave_kib: int) -> Path:
    """A file taking all but `leave_kib` KiB of the file system of `folder`."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize - leave_kib * 1024
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, free))
    return filler


def test_disk_full_while_a_checkpoint_is_written_keeps_the_last_one(data, stopped, tmp_path):
    with small_tmpfs(tmp_path / "disk", "48m") as disk:
        out = copy_run(stopped, disk / "run")
        filler = fill(disk, leave_kib=2000)  # less than one checkpoint (about 9.7 MB)
        before = tree(out)
        ran = run([TRAIN, config(data), "OUTPUT_DIR", out, "SOLVER.EPOCHS", "3", "--resume"], tmp_path / "full.err")
        kept = all(tree(out).get(name) == before[name] for name in ("latest.pth", "best.pth", "epoch_1.pth"))
        judge("disk full while latest.pth is written", 6, ran, 2,
              [f"cannot write {out / 'latest.pth'}: no space left on the device (ENOSPC)",
               "latest.pth keeps its previous content", "--resume"], kept)  # fmt: skip
        filler.unlink()
        assert train(data, out, "SOLVER.EPOCHS", "3", "--stop-after-epoch", "2", "--resume").code == 0


def _limit_file_size(limit: int):
    def apply() -> None:  # in the child, before exec
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_size_limit_while_a_checkpoint_is_written_keeps_the_last_one(data, stopped, tmp_path):
    out = copy_run(stopped, tmp_path / "run")
    before = tree(out)
    ran = run([TRAIN, config(data), "OUTPUT_DIR", out, "SOLVER.EPOCHS", "3", "--resume"], tmp_path / "limit.err",
              preexec=_limit_file_size(4 << 20))  # fmt: skip
    kept = all(tree(out).get(name) == before[name] for name in ("latest.pth", "best.pth", "epoch_1.pth"))
    judge("a 4 MiB file-size limit while latest.pth is written", 6, ran, 2,
          [f"cannot write {out / 'latest.pth'}", "(EFBIG)", "latest.pth keeps its previous content"], kept)  # fmt: skip
    assert train(data, out, "SOLVER.EPOCHS", "3", "--stop-after-epoch", "2", "--resume").code == 0


def test_disk_full_while_stage2_writes_keeps_the_finished_rows(images, tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk, SlowServer(delay=0.0) as server:
        output = disk / "aspects.json"
        fill(disk, leave_kib=8)  # the partial file fits; the aspect file and its sidecar do not
        ran = run(stage2_argv(server, images, output), tmp_path / "full.err")
        rows = partial_rows(output)
        words = [f"cannot write {disk}/", "no space left on the device (ENOSPC)", "--resume"]
        judge("disk full while stage 2 writes its files", 6, ran, 2, words, rows >= 1 and not output.exists())
        (disk / "filler").unlink()
        asked = len(server.requests)
        assert run(stage2_argv(server, images, output, "--resume"), tmp_path / "resume.err").code == 0
        assert len(server.requests) - asked == 3 * (IMAGES - rows)  # the rows on disk were not asked again
        assert sorted(json.loads(output.read_text())) == [f"img_{i}" for i in range(IMAGES)]


def test_a_read_only_run_folder_is_one_line(data, stopped, tmp_path):
    with small_tmpfs(tmp_path / "disk", "48m") as disk:
        out = copy_run(stopped, disk / "run")
        before = tree(out)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        ran = train(data, out, "SOLVER.EPOCHS", "3", "--resume")
        judge("--resume in a read-only run folder", 6, ran, 2,
              [f"{out / '.makd.lock'}: read-only file system (EROFS)", "--resume"], tree(out) == before)  # fmt: skip


def test_a_file_where_a_folder_belongs_and_the_reverse_are_one_line(data, finished, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("the user's notes")
    ran = train(data, blocker / "run")
    judge("OUTPUT_DIR under a file", 6, ran, 2, [f"{blocker} is a file, not a folder"],
          tree(blocker) == {"notes.txt": sha256_file(blocker)})  # fmt: skip
    ran = run_in_process(report_tool.main, [finished, "--out", blocker])
    judge("report.py --out naming a file", 6, ran, 2, [f"{blocker} is a file, not a folder (ENOTDIR)"],
          blocker.read_text() == "the user's notes")  # fmt: skip
    ran = train(data, tmp_path / "run", "DATASET.ASPECT_JSON", data / "train")
    judge("DATASET.ASPECT_JSON naming a folder", 6, ran, 2, [f"aspect file {data / 'train'} is a folder, not a file"],
          clean=not (tmp_path / "run").exists())  # fmt: skip


# ======================================================================= 7: preemption
def test_sigterm_stops_a_training_with_the_command_that_continues_it(data, tmp_path):
    out = tmp_path / "run"
    argv = [TRAIN, config(data), "OUTPUT_DIR", out, "SOLVER.EPOCHS", "40", "DATASET.NUM_WORKERS", "2"]
    trainer = start(argv, tmp_path / "term.err", new_group=True)
    assert wait_for(lambda: (out / "latest.pth").exists(), process=trainer), (tmp_path / "term.err").read_text()
    time.sleep(0.3)
    os.killpg(trainer.pid, signal.SIGTERM)  # as SLURM does: every process of the job, the loader workers too
    ran = finish(trainer, tmp_path / "term.err")
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    hint = f"continue with: python {' '.join(map(str, argv))} --resume"
    judge("SIGTERM to a training's process group", 7, ran, 143, ["terminated (SIGTERM)", hint], epoch >= 1)
    # The printed command continues the run (here stopped one epoch later, to keep the probe short).
    resumed = run([*argv, "--resume", "--stop-after-epoch", str(epoch + 1)], tmp_path / "resume.err")
    assert resumed.code == 0 and f"resumed from epoch {epoch} of 40 (latest.pth)" in resumed.err


def test_sigterm_stops_stage2_keeping_its_rows(images, tmp_path):
    output = tmp_path / "aspects.json"
    with SlowServer(delay=0.15) as server:
        extraction = start(stage2_argv(server, images, output), tmp_path / "term.err")
        assert wait_for(lambda: partial_rows(output) >= 2, process=extraction)
        extraction.send_signal(signal.SIGTERM)
        ran = finish(extraction, tmp_path / "term.err")
        kept = partial_rows(output)
        words = ["terminated (SIGTERM)", f"finished rows are kept in {output}.partial.jsonl", "with --resume"]
        judge("SIGTERM to stage 2", 7, ran, 143, words, kept >= 2)
        asked = len(server.requests)
        assert run(stage2_argv(server, images, output, "--resume"), tmp_path / "resume.err").code == 0
        assert len(server.requests) - asked == 3 * (IMAGES - kept)  # the kept rows were not asked again
    assert sorted(json.loads(output.read_text())) == [f"img_{i}" for i in range(IMAGES)]


def test_sigterm_stops_a_study_and_its_training(data, tmp_path):
    study = write_study(data, tmp_path, epochs=40)
    process = start([REPO / "tools" / "study.py", study], tmp_path / "term.err")
    run_dir = tmp_path / "study" / "makd" / "seed0"
    assert wait_for(lambda: (run_dir / "latest.pth").exists(), process=process)
    process.send_signal(signal.SIGTERM)
    ran = finish(process, tmp_path / "term.err")
    log = (tmp_path / "study" / "makd" / "seed0.log").read_text()
    judge("SIGTERM to a study", 7, ran, 143, ["terminated (SIGTERM)", "run the same command again"],
          clean="terminated (SIGTERM); continue with:" in log)  # fmt: skip
    assert not (run_dir / ".makd.lock").exists()  # the training ended too (its lock file goes with it)


def test_a_user_error_under_torchrun_is_printed_once(data, finished, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    (out / "notes.txt").write_text("the user's notes")
    before = tree(out)
    words = [f"run folder {out} holds notes.txt", "did not write"]
    # The command's own launcher: the whole output is the one line.
    ran = run([TRAIN, config(data), "OUTPUT_DIR", out, "--overwrite", "--nproc-per-node", "2"], tmp_path / "own.err",
              timeout=300)  # fmt: skip
    judge("a user error with --nproc-per-node 2", 7, ran, 2, words, tree(out) == before)
    # Plain torchrun: printed once too (rank 0); torchrun's own failure report and traceback follow it.
    done = run_on_two_processes("our_train", [config(data), "OUTPUT_DIR", out, "--overwrite"], timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    judge("a user error under plain torchrun (2 processes): our lines", 7, Ran(2 if done.returncode else 0,
          "\n".join(errors)), 2, words, tree(out) == before)  # fmt: skip
