"""The aspect file stage 2 writes trains in stage 3 as is: same ids, no conversion."""

from __future__ import annotations

import json

from mllm_fixtures import QUESTIONS, tiny_hf_model  # noqa: F401
from tool_modules import load_tool

from makd.commands.stage2 import main
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import sha256_file


def test_extracted_aspects_train_the_student(release_dataset, tiny_hf_model, tmp_path):  # noqa: F811
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(q + "\n" for q in QUESTIONS[:5]))
    aspects = tmp_path / "teacher_aspects.json"
    train_root = release_dataset["root"] / "train"
    assert main(["--model", str(tiny_hf_model), "--questions", str(questions), "--images", str(train_root),
                 "--output", str(aspects), "--max-tiles", "1", "--dtype", "float32", "--device", "cpu",
                 "--batch-size", "5", "--no-progress"]) == 0
    table = read_aspect_file(aspects, expected_aspects=5)
    assert sorted(table.ids) == sorted(release_dataset["train_ids"])  # flat release folder: bare stems
    overrides = ["DATASET.ASPECT_JSON", str(aspects), "DATASET.QUESTIONS", str(questions), "SOLVER.EPOCHS", "1",
                 "DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0", "EXPERIMENT.NAME", "from_stage2"]
    assert load_tool("our_train").main([str(release_dataset["config"]), *overrides]) == 0
    summary = json.loads((release_dataset["root"] / "output" / "tiny" / "from_stage2" / "summary.json").read_text())
    assert summary["aspect_sha256"] == sha256_file(aspects)
    assert summary["num_aspects"] == 5 and summary["num_train_images"] == 24
