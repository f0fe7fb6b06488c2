"""Teacher cost beside accuracy in tools/report.py: real stage-2 files (tiny InternVL per image, tiny causal LM per
class) and real training runs; missing or changed teacher files are notes in the table, not crashes."""

# ruff: noqa: F811  (the fixtures imported from mllm_fixtures are pytest parameters here)

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from mllm_fixtures import QUESTIONS, questions_file, tiny_hf_model  # noqa: F401

from makd.commands.aspects import main as aspects_main
from makd.commands.stage2 import main as stage2_main
from makd.demo.tiny_causal_lm import build_tiny_causal_lm
from makd.formats.files import read_sidecar, sidecar_path
from tests.conftest import draw_image
from tests.test_train_e2e import FAST, our_train
from tests.tool_modules import load_tool

report = load_tool("report")
CLASSES = ["pug", "shiba inu"]


def _images(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            draw_image(rng, label, size=12).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def finished_runs(tiny_hf_model, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cost")
    _images(root / "train", 3, 0)
    _images(root / "test", 1, 1)
    questions = root / "questions.txt"
    questions.write_text("".join(q + "\n" for q in QUESTIONS[:4]), encoding="utf-8")
    per_image = root / "per_image.json"
    assert stage2_main(["--model", str(tiny_hf_model), "--questions", str(questions), "--images", str(root / "train"),
                        "--output", str(per_image), "--max-tiles", "1", "--dtype", "float32", "--device", "cpu",
                        "--no-progress"]) == 0  # fmt: skip
    class_questions, class_names = root / "class_questions.txt", root / "classes.txt"
    class_questions.write_text("Is the <object> furry?\nDoes a <object> swim?\nIs the <object> small?\n")
    class_names.write_text("".join(c + "\n" for c in CLASSES))
    per_class = root / "per_class.json"
    assert stage2_main(["--level", "class", "--model", str(build_tiny_causal_lm(root / "lm")), "--questions",
                        str(class_questions), "--classes", str(class_names), "--output", str(per_class),
                        "--device", "cpu"]) == 0  # fmt: skip
    spread = root / "per_class_images.json"
    assert aspects_main(["convert", str(per_class), "--out", str(spread), "--images", str(root / "train")]) == 0
    common = [*FAST, "DATASET.TYPE", "image_folder", "DATASET.TRAIN_IMAGE_PATH", str(root / "train"),
              "DATASET.TEST_IMAGE_PATH", str(root / "test"), "DATASET.NUM_WORKERS", "0", "DISTILLER.STUDENT",
              "resnet8x4", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "8", "SOLVER.LR", "0.01",
              "LOG.TENSORBOARD_FREQ", "100", "NUM_THREADS", "1"]  # fmt: skip
    makd = ["DISTILLER.TYPE", "MaKD", "DATASET.ASPECT_JSON", str(per_image), "MaKD.ASPECT_NUM", "4"]
    runs = {
        "baseline": ["DISTILLER.TYPE", "NONE", "DATASET.ASPECT_JSON", str(per_image)],
        "per_image": makd,
        "random": [*makd, "MaKD.TARGETS", "random"],
        "class_level": ["DISTILLER.TYPE", "MaKD", "DATASET.ASPECT_JSON", str(spread), "MaKD.ASPECT_NUM", "3"],
        "lavid": ["DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS", str(per_class)],
    }
    config = root / "base.yaml"
    config.write_text("EXPERIMENT:\n  PROJECT: cost\nLOG:\n  WANDB: False\n", encoding="utf-8")
    for name, extra in runs.items():
        out = root / "runs" / name
        argv = [str(config), *common, *extra, "OUTPUT_DIR", str(out), "EXPERIMENT.NAME", name]
        assert our_train.main(argv) == 0, name
    return {"root": root, "per_image": per_image, "per_class": per_class}


def _report(finished_runs: dict, tmp_path: Path) -> dict[str, dict]:
    out = tmp_path / "report"
    assert report.main([str(finished_runs["root"] / "runs"), "--reference", "baseline", "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    rows = {r["condition"]: r for r in csv.DictReader((out / "results.csv").open())}
    for name, row in rows.items():
        row["cell"] = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |")).split(" | ")[-1]
    return rows


def test_report_shows_each_teachers_cost_beside_accuracy(finished_runs, tmp_path):
    rows = _report(finished_runs, tmp_path)
    per_image = read_sidecar(finished_runs["per_image"])["cost"]
    per_class = read_sidecar(finished_runs["per_class"])["cost"]
    assert per_image["prompts_scored"] == 6 * 4 and per_class["prompts_scored"] == 2 * 3
    for name, cost in (("per_image", per_image), ("class_level", per_class), ("lavid", per_class)):
        row = rows[name]
        assert int(row["teacher_prompts_scored"]) == cost["prompts_scored"], name
        assert int(row["teacher_tokens_processed"]) == cost["tokens_processed"] > 0, name
        assert float(row["teacher_seconds"]) == cost["seconds"] and row["teacher_cost_note"] == ""
        assert row["cell"].startswith(f"{cost['prompts_scored']:,} prompts, {cost['tokens_processed']:,} tokens, ")
    for name in ("baseline", "random"):  # no teacher: the random control replaces its answers
        assert rows[name]["teacher_prompts_scored"] == "" and rows[name]["teacher_cost_note"] == "—"
        assert rows[name]["cell"] == "— |"
    assert float(rows["per_image"]["last_mean"]) >= 0  # accuracy and cost on one row


def test_missing_sidecar_and_changed_file_are_notes_not_errors(finished_runs, tmp_path):
    per_image, per_class = finished_runs["per_image"], finished_runs["per_class"]
    kept_sidecar, kept_rows = sidecar_path(per_class).read_text(), per_image.read_text()
    try:
        sidecar_path(per_class).unlink()
        rows = json.loads(per_image.read_text())
        per_image.write_text(json.dumps({k: [0.5] * 4 for k in rows}))
        table = _report(finished_runs, tmp_path)
    finally:
        sidecar_path(per_class).write_text(kept_sidecar)
        per_image.write_text(kept_rows)
    assert table["per_image"]["teacher_cost_note"].endswith("per_image.json changed since the run (sha256 differs)")
    for name in ("class_level", "lavid"):  # the converted file leads to the per-class file, whose sidecar is gone
        assert table[name]["teacher_cost_note"].startswith("no sidecar (")
        assert table[name]["teacher_prompts_scored"] == ""
        assert "per_class.json.meta.json" in table[name]["cell"]
