"""tools/study.py: the study file, what is finished / resumed / started, the commands for a job runner, and a real
study (2 conditions, subprocess trainings, one of them resumed from an interrupted run) with its results table."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml
from tool_modules import load_tool

from makd.analysis.study import (
    StudyError,
    child_threads,
    load_study,
    plan,
    resolved_config,
    run_lock,
    train_command,
)

REPO = Path(__file__).resolve().parents[1]


study_tool = load_tool("study")
our_train = load_tool("our_train")


def write_study(tmp_path: Path, base_config: Path, **changes) -> Path:
    spec = {
        "name": "tiny",
        "base": str(base_config),
        "output": str(tmp_path / "study"),
        "seeds": [0, 1],
        "overrides": {"SOLVER.EPOCHS": 2, "DATASET.IMAGE_SIZE": 32, "DATASET.RESIZE_RATIO": 1.0},
        "reference": "baseline",
        "conditions": {"baseline": {"DISTILLER.TYPE": "NONE"}, "makd": {}},
    }
    spec.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_study_file_conditions_and_sweep(release_dataset, tmp_path):
    path = write_study(tmp_path, release_dataset["config"], sweep={"key": "MaKD.ALPHA", "values": [1.0, 4.0]})
    study = load_study(path)
    assert list(study.conditions) == ["baseline", "makd@MaKD.ALPHA=1.0", "makd@MaKD.ALPHA=4.0"]
    assert study.conditions["makd@MaKD.ALPHA=1.0"][-2:] == ["MaKD.ALPHA", "1.0"]
    runs = study.runs()
    assert len(runs) == 6
    assert runs[2].run_dir == tmp_path / "study" / "makd@MaKD.ALPHA=1.0" / "seed0"
    argv = runs[2].argv
    assert argv[argv.index("SEED") + 1] == "0" and argv[argv.index("EXPERIMENT.NAME") + 1] == "makd@MaKD.ALPHA=1.0"
    assert argv[argv.index("SOLVER.EPOCHS") + 1] == "2"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seed": [0]}, "unknown key"),
        ({"seeds": [0, 0]}, "lists a seed twice"),
        ({"reference": "kd"}, "reference 'kd' is not a condition"),
        ({"conditions": {"a": {"SEED": 3}}}, "sets SEED"),
        ({"base": "missing.yaml"}, "base config missing.yaml does not exist"),
        ({"sweep": {"key": "MaKD.ALPHA"}}, "needs `key` and a list of `values`"),
        ({"plots": {"tsne": ["baseline", "kd"]}}, "plots.tsne names 'kd'"),
    ],
)
def test_study_file_mistakes_are_one_line_errors(release_dataset, tmp_path, changes, message):
    with pytest.raises(StudyError, match=message):
        load_study(write_study(tmp_path, release_dataset["config"], **changes))


def test_status_todo_resume_done_and_a_changed_config_is_refused(release_dataset, tmp_path, capsys):
    path = write_study(tmp_path, release_dataset["config"])
    study = load_study(path)
    runs = {(r.condition, r.seed): r for r in study.runs()}
    assert {status for _, status, _ in plan(study)} == {"todo"}
    # An interrupted run: latest.pth without summary.json -> resumed; a finished one: summary.json -> done.
    interrupted, finished = runs[("makd", 0)], runs[("baseline", 1)]
    assert our_train.main([*interrupted.argv, "--stop-after-epoch", "1"]) == 0
    assert our_train.main(list(finished.argv)) == 0
    statuses = {(run.condition, run.seed): status for run, status, _ in plan(study)}
    assert statuses == {("baseline", 0): "todo", ("baseline", 1): "done", ("makd", 0): "resume", ("makd", 1): "todo"}
    assert train_command(interrupted, True)[-1] == "--resume"
    capsys.readouterr()
    assert study_tool.main([str(path), "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("--run-one" in line and line.startswith(sys.executable) for line in lines)
    assert not any(line.endswith("baseline 1") for line in lines)
    # The study file changes a setting after the runs: their folders are refused, not mixed into the table.
    changed = write_study(
        tmp_path,
        release_dataset["config"],
        overrides={"SOLVER.EPOCHS": 3, "DATASET.IMAGE_SIZE": 32, "DATASET.RESIZE_RATIO": 1.0},
    )
    assert study_tool.main([str(changed), "--no-run"]) == 2
    assert "holds a run of another configuration (differs in SOLVER.EPOCHS" in capsys.readouterr().err


def test_real_study_trains_resumes_and_writes_results(release_dataset, tmp_path, capsys):
    conditions = {"baseline": {"DISTILLER.TYPE": "NONE"}, "makd": {}, "broken": {"DATASET.ASPECT_JSON": "absent.json"}}
    path = write_study(tmp_path, release_dataset["config"], seeds=[0], conditions=conditions)
    study = load_study(path)
    makd_run = next(r for r in study.runs() if r.condition == "makd")
    assert our_train.main([*makd_run.argv, "--stop-after-epoch", "1"]) == 0  # an interrupted run to continue
    capsys.readouterr()
    assert study_tool.main([str(path), "--jobs", "2"]) == 2  # the broken run fails; the others still count
    out, err = capsys.readouterr()
    assert "0 finished, 1 to resume, 2 to start" in out
    assert "broken/seed0: FAILED with exit code 2" in out and "absent.json" in out  # the log's last lines
    assert "error: 1 run(s) failed: broken/seed0" in err
    log = makd_run.log_path.read_text()
    assert "--resume" in log
    rows = [json.loads(line) for line in (makd_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    table = list(csv.DictReader((tmp_path / "study" / "results.csv").open()))
    assert [(r["condition"], r["n"], r["reference"]) for r in table] == [
        ("baseline", "1", "baseline"),
        ("makd", "1", "baseline"),
    ]
    summaries = {
        name: json.loads((tmp_path / "study" / name / "seed0" / "summary.json").read_text())
        for name in ("baseline", "makd")
    }
    assert float(table[1]["diff_last_mean"]) == pytest.approx(
        summaries["makd"]["test_top1_last"] - summaries["baseline"]["test_top1_last"], abs=1e-4
    )
    assert "| makd | 1 | 0 |" in (tmp_path / "study" / "results.md").read_text()
    assert not (tmp_path / "study" / "plots").exists()  # the study file asks for none (tests/test_plots.py draws them)
    assert "Not finished (1): broken/seed0." in (tmp_path / "study" / "results.md").read_text()
    # A second invocation trains nothing that is finished.
    assert study_tool.main([str(path), "--no-run"]) == 0
    assert "2 finished, 0 to resume, 1 to start" in capsys.readouterr().out


def test_threads_per_training_split_the_cores_and_drop_to_one_on_a_busy_machine():
    assert child_threads(1, cores=8, load=0.5) == 8
    assert child_threads(3, cores=8, load=0.5) == 2
    assert child_threads(16, cores=8, load=0.5) == 1
    assert child_threads(1, cores=2, load=6.0) == 1


def test_a_run_being_trained_elsewhere_is_locked(tmp_path):
    with run_lock(tmp_path / "run") as first:
        with run_lock(tmp_path / "run") as second:  # another open file description: flock refuses it
            assert (first, second) == (True, False)
    with run_lock(tmp_path / "run") as again:
        assert again


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "studies").glob("*.yaml")))
def test_every_shipped_study_loads_and_resolves(path, monkeypatch):
    monkeypatch.chdir(REPO)  # study paths are relative to the repository root
    study = load_study(path.relative_to(REPO))
    assert study.reference in study.conditions and len(study.seeds) >= 1
    configs = [resolved_config(run) for run in study.runs()]  # every override is a valid config key and value
    assert len(configs) == len(study.conditions) * len(study.seeds)
