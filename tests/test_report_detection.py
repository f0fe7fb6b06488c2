"""Detection runs in the study and report tables: COCO mAP over seeds, paired differences, curves, and one task
per table."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml
from test_report import write_run
from tool_modules import load_tool

from makd.analysis.results_table import TableError, summarise
from makd.analysis.run_folders import TASK_METRICS, RunFolderError, group_by_condition, read_run
from makd.demo.detection import generate_detection_demo

REPO = Path(__file__).resolve().parents[1]
study_tool = load_tool("study")
report = load_tool("report")


@pytest.fixture(scope="module")
def detection_study(tmp_path_factory) -> Path:
    """A finished two-condition, two-seed detection study (1 epoch each on 16 train / 6 test images of 64 px)."""
    root = tmp_path_factory.mktemp("detection_study")
    demo = root / "data"
    generate_detection_demo(demo, num_train=16, num_test=6, seed=3)
    overrides = {
        "DATASET.TRAIN_IMAGE_PATH": str(demo / "train"),
        "DATASET.TEST_IMAGE_PATH": str(demo / "test"),
        "DATASET.ASPECT_JSON": str(demo / "box_aspects_train.json"),
        "DATASET.TEST_ASPECT_JSON": str(demo / "box_aspects_test.json"),
        "DATASET.QUESTIONS": str(demo / "questions.txt"),
        "DETECTION.TRAIN_JSON": str(demo / "instances_train.json"),
        "DETECTION.TEST_JSON": str(demo / "instances_test.json"),
        "SOLVER.EPOCHS": 1,
        "SOLVER.BATCH_SIZE": 4,
        "SOLVER.WARMUP_EPOCHS": 0,
        "DATASET.TEST.BATCH_SIZE": 4,
    }
    study = {
        "name": "detection",
        "base": str(REPO / "configs" / "demo_detection" / "makd.yaml"),
        "output": str(root / "study"),
        "seeds": [0, 1],
        "overrides": overrides,
        "conditions": {"baseline": {"DISTILLER.TYPE": "NONE"}, "makd": {}},
        "plots": {"curves": True, "tsne": ["baseline"], "aspects": "makd"},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert study_tool.main([str(path), "--jobs", "2"]) == 0
    return root / "study"


def _summaries(study: Path) -> dict[str, list[dict]]:
    return {
        name: [json.loads((study / name / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        for name in ("baseline", "makd")
    }


def test_study_table_is_coco_map_over_seeds(detection_study):
    summaries = _summaries(detection_study)
    assert all(s["task"] == "detection" for runs in summaries.values() for s in runs)
    table = {row["condition"]: row for row in csv.DictReader((detection_study / "results.csv").open())}
    for name, runs in summaries.items():
        maps = [s["test_map_last"] for s in runs]
        assert float(table[name]["last_mean"]) == pytest.approx(statistics.mean(maps), abs=1e-4)
        assert float(table[name]["last_sd"]) == pytest.approx(statistics.stdev(maps), abs=1e-4)
        assert table[name]["n"] == "2" and table[name]["best_selected_on"] == "test"
    paired = [m["test_map_last"] - b["test_map_last"] for b, m in zip(summaries["baseline"], summaries["makd"])]
    assert float(table["makd"]["diff_last_mean"]) == pytest.approx(statistics.mean(paired), abs=1e-4)
    markdown = (detection_study / "results.md").read_text()
    assert "Test COCO mAP (%), mean ± sd over seeds" in markdown
    assert "| condition | n | seeds | test COCO mAP last | best test COCO mAP (chosen on test) |" in markdown
    assert "top-1" not in markdown
    runs = list(csv.DictReader((detection_study / "runs.csv").open()))
    assert {"test_map_last", "test_map_best_selected"} <= set(runs[0])
    assert float(runs[0]["test_map_last"]) == pytest.approx(summaries[runs[0]["condition"]][0]["test_map_last"])


def test_study_curves_show_map_and_skip_classification_plots(detection_study):
    plots = detection_study / "plots" / "seed0"  # the first seed's, by default; the seed in every label
    curves = json.loads((plots / "training_curves.json").read_text())
    labels = {label.split(" ⚠")[0]: label for label in curves}  # without the training-health marks, if any
    assert set(labels) == {"baseline (seed 0)", "makd (seed 0)"}
    makd = curves[labels["makd (seed 0)"]]
    assert makd["test_map"][0][0] == 1  # epoch 1
    assert makd["test_map"][0][1] == pytest.approx(_summaries(detection_study)["makd"][0]["test_map_last"])
    assert "train_loss" in makd
    assert not list(plots.glob("tsne*")) and not list(plots.glob("aspect*"))


def test_report_reads_detection_runs_and_refuses_a_mix_of_tasks(detection_study, tmp_path, capsys):
    assert report.main([str(detection_study), "--reference", "baseline"]) == 0
    out = capsys.readouterr().out
    assert "test COCO mAP last" in out and "| makd | 2 | 0,1 |" in out
    write_run(tmp_path / "classification", 0, 50.0, 51.0, "cls")
    folders = (detection_study / "makd" / "seed0", tmp_path / "classification")
    groups = group_by_condition([read_run(p) for p in folders])
    with pytest.raises(TableError, match="one table holds one task, but these runs mix detection"):
        summarise(groups)
    assert report.main([str(detection_study), str(tmp_path / "classification")]) == 2
    assert "report each task's runs separately" in capsys.readouterr().err


def write_detection_run(folder: Path, seed: int, last: float, best: float, name: str, distiller: str) -> Path:
    """A finished detection run folder: the summary keys the detection task writes (values chosen here)."""
    write_run(folder, seed, 0.0, 0.0, name, TASK="detection", DISTILLER__TYPE=distiller)
    summary = {"task": "detection", "test_map_last": last, "test_map_best": best, "test_map50_last": 90.0,
               "seed": seed, "best_epoch": 2}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_map_table_numbers_over_three_seeds(tmp_path):
    """Distinct mAPs, so mean, sd and the paired interval are checked against hand-computed values."""
    for seed, (b, m) in enumerate([(40.0, 43.0), (42.0, 46.0), (44.0, 45.0)]):
        write_detection_run(tmp_path / f"b{seed}", seed, b, b + 1, "baseline", "NONE")
        write_detection_run(tmp_path / f"m{seed}", seed, m, m + 3, "makd", "MaKD")
    rows, reference = summarise(group_by_condition([read_run(p) for p in sorted(tmp_path.iterdir())]), "baseline")
    base, makd = rows
    assert reference == "baseline" and base.metric.key == makd.metric.key == "map"
    assert base.last.mean == pytest.approx(42.0) and base.last.sd == pytest.approx(2.0)
    assert makd.best.mean == pytest.approx(47.6666667) and makd.best_selected_on == "test"
    # paired differences 3, 4, 1: mean 2.667, sd 1.528, 95 % t interval with 2 df
    assert makd.diff_last.mean == pytest.approx(8 / 3)
    half = 4.302652729911275 * statistics.stdev([3.0, 4.0, 1.0]) / 3**0.5
    assert (makd.diff_last.low, makd.diff_last.high) == pytest.approx((8 / 3 - half, 8 / 3 + half))


def test_table_metrics_are_the_tasks_own():
    from makd.config.defaults import TASKS
    from makd.tasks.classification import ClassificationTask
    from makd.tasks.detection import DetectionTask

    assert set(TASK_METRICS) == set(TASKS)
    assert TASK_METRICS["classification"].key == ClassificationTask.metric
    assert TASK_METRICS["detection"].key == DetectionTask.metric


def test_a_summary_of_an_unknown_task_is_a_one_line_error(tmp_path):
    folder = write_run(tmp_path / "run", 0, 50.0, 51.0)
    (folder / "summary.json").write_text(json.dumps({"task": "segmentation", "test_top1_last": 1, "seed": 0}))
    with pytest.raises(RunFolderError, match="task 'segmentation' is unknown"):
        read_run(folder)
    (folder / "summary.json").write_text(json.dumps({"task": "detection", "test_top1_last": 1, "test_top1_best": 1}))
    with pytest.raises(RunFolderError, match="no finite 'test_map_last'"):
        read_run(folder)
