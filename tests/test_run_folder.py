"""The run folder and the stage-3 error path: --overwrite removes only a previous run's own files and only
after the new run's checks passed; a refused --resume changes nothing; --resume checks every checkpoint it
relies on; the TrainState holds all trainable state; non-finite states and evaluations are never kept;
metrics.jsonl is strict JSON; eval --split train is deterministic; user errors are one line naming the key;
every tool runs the checkout's own makd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool
from torch import nn

from makd.commands import train as cli
from makd.engine import run_folder
from makd.engine.run_logger import metrics_line
from makd.engine.train_state import TrainState
from makd.engine.trainer import NonFiniteLossError, _best_epochs, _check_finite_state, evaluate_checkpoint
from makd.errors import run_command
from makd.formats.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
FAST = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0"]


our_train = load_tool("our_train")


def train(ds, out: Path, *extra: str) -> int:
    return our_train.main([str(ds["config"]), *FAST, "OUTPUT_DIR", str(out), *extra])


def tree(root: Path) -> dict[str, str]:
    """Every file under root (relative name -> sha256): "nothing changed" means this stays equal."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---------------------------------------------------------------- --overwrite


def test_overwrite_removes_only_the_previous_run_and_only_after_the_checks(release_dataset, capsys):
    out = release_dataset["root"] / "run"
    assert train(release_dataset, out, "SOLVER.EPOCHS", "2", "LOG.SAVE_CHECKPOINT_FREQ", "1") == 0
    assert {"epoch_1.pth", "epoch_2.pth", "summary.json", "tensorboard"} <= set(os.listdir(out))
    before = tree(out)
    capsys.readouterr()
    # The new run fails its data check (Q = 7 but the aspect file has 5): nothing is removed.
    assert train(release_dataset, out, "--overwrite", "MaKD.ASPECT_NUM", "7") == 2
    assert "MaKD.ASPECT_NUM" in one_error_line(capsys)
    assert tree(out) == before
    (out / ".latest.pth.k3j9x_q.tmp").write_bytes(b"half a checkpoint")  # left by a kill mid-write
    assert train(release_dataset, out, "--overwrite", "SOLVER.EPOCHS", "1", "LOG.SAVE_CHECKPOINT_FREQ", "0") == 0
    names = set(os.listdir(out))
    assert not {"epoch_1.pth", "epoch_2.pth", ".latest.pth.k3j9x_q.tmp"} & names
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert len(list((out / "tensorboard").iterdir())) == 1  # the old run's event file went with it


@pytest.mark.parametrize("foreign", ["notes.txt", "my_config.yaml", "images"])
def test_a_run_folder_holding_anything_else_is_refused_and_kept(release_dataset, capsys, foreign):
    out = release_dataset["root"] / "run"
    assert train(release_dataset, out, "SOLVER.EPOCHS", "1") == 0
    if foreign == "images":
        (out / foreign).mkdir()
        (out / foreign / "cat.png").write_bytes(b"png")
        config = release_dataset["config"]
    else:
        (out / foreign).write_text(release_dataset["config"].read_text())
        config = out / foreign if foreign.endswith(".yaml") else release_dataset["config"]
    before = tree(out)
    capsys.readouterr()
    assert our_train.main([str(config), *FAST, "OUTPUT_DIR", str(out), "--overwrite"]) == 2
    line = one_error_line(capsys)
    assert f"holds {foreign}" in line and "did not write" in line
    assert tree(out) == before


def test_output_dir_dot_with_the_users_files_is_refused(release_dataset, capsys, monkeypatch):
    root = release_dataset["root"]
    monkeypatch.chdir(root)
    before = tree(root)
    for flags in ([], ["--overwrite"]):
        assert our_train.main([str(release_dataset["config"]), *FAST, "OUTPUT_DIR", ".", *flags]) == 2
        assert "holds aspects.json (and " in one_error_line(capsys)
    assert tree(root) == before


def test_resume_and_overwrite_together_are_refused(release_dataset, capsys):
    assert train(release_dataset, release_dataset["root"] / "x", "--resume", "--overwrite") == 2
    assert "--resume and --overwrite" in one_error_line(capsys)
    assert not (release_dataset["root"] / "x").exists()


# ---------------------------------------------------------------- --resume


@pytest.fixture
def stopped_run(release_dataset) -> Path:
    """A run stopped after 2 of 3 epochs, with a snapshot of every epoch."""
    out = release_dataset["root"] / "stopped"
    assert train(release_dataset, out, "LOG.SAVE_CHECKPOINT_FREQ", "1", "--stop-after-epoch", "2") == 0
    return out


def resume(ds, out: Path, *extra: str) -> int:
    return train(ds, out, "LOG.SAVE_CHECKPOINT_FREQ", "1", "--resume", *extra)


def test_a_refused_resume_changes_nothing(release_dataset, stopped_run, capsys):
    before = tree(stopped_run)
    capsys.readouterr()
    for change in (["SOLVER.LR", "0.1"], ["SOLVER.EPOCHS", "4"], ["MaKD.ALPHA", "2.0"]):
        assert resume(release_dataset, stopped_run, *change) == 2
        assert change[0] in one_error_line(capsys)
    assert tree(stopped_run) == before  # config.yaml included


def _set_best_epoch_to_1(path: Path) -> None:
    """Make the history say epoch 1 was best (the test's way to get best epoch != latest epoch)."""
    state = torch.load(path, weights_only=False)
    state["history"][0]["test_top1"] = 100.0
    state["history"][1]["test_top1"] = 0.0
    torch.save(state, path)


def test_resume_with_an_unreadable_best_checkpoint_is_refused_in_one_line(release_dataset, stopped_run, capsys):
    _set_best_epoch_to_1(stopped_run / "latest.pth")
    (stopped_run / "best.pth").write_bytes((stopped_run / "best.pth").read_bytes()[:1000])  # truncated
    before = tree(stopped_run)
    capsys.readouterr()
    assert resume(release_dataset, stopped_run) == 2
    line = one_error_line(capsys)
    assert "best.pth is not the best epoch 1" in line and "cannot be read" in line and "delete it" in line
    assert tree(stopped_run) == before
    # Deleting it accepts the loss: the run goes on and says what is gone.
    (stopped_run / "best.pth").unlink()
    assert resume(release_dataset, stopped_run) == 0
    assert "best.pth is missing: the weights of best epoch 1 are lost" in capsys.readouterr().err


def test_resume_rebuilds_best_and_snapshot_written_after_latest(release_dataset, stopped_run, capsys):
    state = torch.load(stopped_run / "latest.pth", weights_only=False)
    state["history"][0]["test_top1"], state["history"][1]["test_top1"] = 0.0, 100.0  # best = latest = epoch 2
    torch.save(state, stopped_run / "latest.pth")
    # A kill after latest.pth of epoch 2 was written, before best.pth / epoch_2.pth were: best.pth still holds
    # epoch 1 (an atomic write leaves the old file), epoch_2.pth does not exist yet.
    (stopped_run / "epoch_2.pth").unlink()
    capsys.readouterr()
    assert resume(release_dataset, stopped_run, "--stop-after-epoch", "2") == 0  # accepted, nothing trained
    err = capsys.readouterr().err
    assert "best.pth" in err and "epoch_2.pth" in err and "rebuilt from latest.pth" in err
    latest = sha256_file(stopped_run / "latest.pth")
    assert sha256_file(stopped_run / "best.pth") == latest == sha256_file(stopped_run / "epoch_2.pth")


def test_resume_from_an_unreadable_latest_names_it_and_the_fallback(release_dataset, stopped_run, capsys):
    (stopped_run / "latest.pth").write_bytes(b"not a checkpoint")
    before = tree(stopped_run)
    capsys.readouterr()
    assert resume(release_dataset, stopped_run) == 2
    line = one_error_line(capsys)
    assert "latest.pth cannot be read" in line and "copy epoch_2.pth to latest.pth" in line
    assert tree(stopped_run) == before


# ---------------------------------------------------------------- train state and finiteness


class TeacherDistiller(nn.Module):
    """A distiller with its own learnable module, a buffer and a frozen teacher."""

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.projector = nn.Linear(4, 2)
        self.register_buffer("running_target", torch.zeros(2))
        self.teacher = nn.Linear(3, 4).requires_grad_(False)


def make_state(distiller: nn.Module) -> TrainState:
    optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return TrainState(distiller, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=False), config="x: 1\n")


def test_train_state_round_trips_all_trainable_state_but_the_teacher():
    torch.manual_seed(0)
    source = make_state(TeacherDistiller())
    source.distiller.running_target += 3.0
    loss = source.distiller.projector(source.distiller.student(torch.randn(5, 3))).sum()
    loss.backward()
    source.optimizer.step()
    source.epoch, source.step, source.history, source.train_seconds = 4, 40, [{"epoch": 4}], 12.5
    checkpoint = source.to_checkpoint()
    assert set(checkpoint["model"]) == set(source.distiller.student.state_dict())
    assert set(checkpoint["distiller_extra"]) == {"projector.weight", "projector.bias", "running_target"}

    torch.manual_seed(1)
    target = make_state(TeacherDistiller())
    teacher_before = target.distiller.teacher.weight.clone()
    target.restore(checkpoint, "latest.pth", steps_per_epoch=10)
    for key, value in source.distiller.state_dict().items():
        if not key.startswith("teacher."):
            assert torch.equal(target.distiller.state_dict()[key], value), key
    assert torch.equal(target.distiller.teacher.weight, teacher_before)  # the teacher comes from its own file
    assert (target.epoch, target.step, target.history, target.train_seconds) == (4, 40, [{"epoch": 4}], 12.5)
    assert target.optimizer.state_dict()["state"].keys() == source.optimizer.state_dict()["state"].keys()

    # makd <= 0.1 checkpoints hold only the student under "model" (no extra entries, no step).
    def plain_distiller() -> nn.Module:
        module = nn.Module()
        module.student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        return module

    old = make_state(plain_distiller())
    old.epoch = 4
    old_checkpoint = {k: v for k, v in old.to_checkpoint().items() if k not in ("distiller_extra", "step")}
    plain = make_state(plain_distiller())
    plain.restore(old_checkpoint, "old.pth", steps_per_epoch=10)
    assert plain.step == 40 and torch.equal(plain.distiller.student[0].weight, old.distiller.student[0].weight)


def test_non_finite_batchnorm_statistics_stop_the_run():
    state = make_state(TeacherDistiller())
    assert state.nonfinite_entries() == []
    state.distiller.student[1].running_var[2] = float("inf")
    state.distiller.teacher.weight.data[0, 0] = float("nan")  # the frozen teacher is not part of the state
    assert state.nonfinite_entries() == ["student.1.running_var"]
    with pytest.raises(NonFiniteLossError, match=r"after epoch 1 \(student\.1\.running_var\).*no checkpoint"):
        _check_finite_state(state, 1)


def test_a_non_finite_evaluation_is_never_best():
    nan = float("nan")
    rows = [
        {"epoch": 1, "test_top1": 50.0, "test_top5": 90.0, "test_loss": 1.0},
        {"epoch": 2, "test_top1": 80.0, "test_top5": 90.0, "test_loss": nan},
        {"epoch": 3, "test_top1": nan, "test_top5": 90.0, "test_loss": 1.0},
    ]
    assert _best_epochs(rows)["best_epoch"] == 1
    with_val = [{**row, "val_top1": v, "val_top5": 1.0, "val_loss": 1.0} for row, v in zip(rows, (10.0, 90.0, 95.0))]
    with_val[0]["val_loss"] = float("inf")
    assert _best_epochs(with_val) == {"test_top1_best": 50.0, "test_top1_best_epoch": 1}  # no good val epoch


# ---------------------------------------------------------------- metrics, TensorBoard, evaluation


def test_metrics_are_strict_json_and_tensorboard_gets_the_epoch_scalars(release_dataset):
    assert metrics_line({"epoch": 1, "auc": float("nan"), "mae": float("inf"), "top1": 50.0}) == (
        '{"epoch": 1, "auc": null, "mae": null, "top1": 50.0}'
    )
    out = release_dataset["root"] / "run"
    extra = ["SOLVER.EPOCHS", "2", "DATASET.TEST_ASPECT_JSON", str(release_dataset["test_aspects"])]
    assert train(release_dataset, out, *extra) == 0

    def refuse(name):
        raise AssertionError(f"bare {name} in metrics.jsonl")

    rows = [json.loads(line, parse_constant=refuse) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "epoch/test_top1" in scalars and "train/loss" in scalars
    assert [e.value for e in events.Scalars("epoch/test_top1")] == pytest.approx([r["test_top1"] for r in rows])


def test_eval_of_the_training_split_uses_the_evaluation_transform(release_dataset):
    out = release_dataset["root"] / "run"
    assert train(release_dataset, out, "SOLVER.EPOCHS", "1") == 0
    opts = [*FAST]
    first, second = (
        evaluate_checkpoint(str(release_dataset["config"]), str(out / "latest.pth"), opts, "train") for _ in range(2)
    )
    assert first["num_samples"] == 24 and first == second  # the random training transform gave two numbers


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    "key, value",
    [
        ("DEVICE", "gpu"),
        ("SOLVER.LR", "-1"),
        ("SOLVER.LR", "0"),
        ("SOLVER.WEIGHT_DECAY", "-0.1"),
        ("SOLVER.MOMENTUM", "1.0"),
        ("MaKD.ALPHA", "-1"),
        ("MaKD.CE_WEIGHT", "-1"),
        ("SOLVER.LR_DECAY_STAGES", "[0]"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(release_dataset, capsys, key, value):
    assert train(release_dataset, release_dataset["root"] / "bad", key, value) == 2
    assert key in one_error_line(capsys)
    assert not (release_dataset["root"] / "bad").exists()


def test_cuda_without_a_gpu_is_one_line(release_dataset, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    assert train(release_dataset, release_dataset["root"] / "bad", "DEVICE", "cuda") == 2
    assert "DEVICE 'cuda' asks for CUDA but no CUDA device is visible" in one_error_line(capsys)


def test_only_user_errors_become_one_line(monkeypatch):
    assert cli.run_command is run_command  # the one runner of makd.errors

    def bug(*args, **kwargs):
        raise ValueError("a bug keeps its traceback")

    monkeypatch.setattr(cli, "train", bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.train_main(["configs/demo/makd.yaml"])


def test_the_run_folder_list_covers_every_written_file(release_dataset):
    out = release_dataset["root"] / "run"
    assert train(release_dataset, out, "SOLVER.EPOCHS", "2", "LOG.SAVE_CHECKPOINT_FREQ", "1") == 0
    for path in out.iterdir():
        assert run_folder.is_run_entry(path), path.name


# ---------------------------------------------------------------- every tool runs the checkout's code

TOOLS = sorted([*(REPO / "tools").glob("*.py"), *(REPO / "InternVL_logits").glob("*.py")])

# Runs each tool as `python TOOL --help` would (as __main__, from its own path), in a folder holding a decoy
# makd package that fails on import, with no PYTHONPATH; prints the makd each tool ended up importing.
RUN_EACH = """
import runpy, sys
base_path, base_modules = list(sys.path), set(sys.modules)
for tool in sys.argv[1:]:
    sys.path[:] = base_path
    for name in [m for m in sys.modules if m not in base_modules and (m == "makd" or m.startswith("makd."))]:
        del sys.modules[name]
    sys.argv = [tool, "--help"]
    try:
        runpy.run_path(tool, run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), (tool, stop.code)
    print("MAKD", tool, sys.modules["makd"].__file__, flush=True)
"""


def test_every_tool_runs_the_checkouts_own_makd(tmp_path):
    decoy = tmp_path / "makd"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy makd was imported')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_EACH, *map(str, TOOLS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = dict(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("MAKD "))
    assert set(imported) == set(map(str, TOOLS))
    assert all(Path(path) == REPO / "makd" / "__init__.py" for path in imported.values()), imported
