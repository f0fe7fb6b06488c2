"""`make_questions.py --check`: a hand-written questions file gets stage 1's screening, a sidecar records it, and
stage 2 warns when its questions file was never screened, changed since, or failed (issue 21, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from makd.commands.make_questions import main as stage1_main
from makd.formats.files import sidecar_path
from makd.formats.screening_record import screening_warning

CLASSES = ["Bengal", "Persian", "pug", "beagle"]
GOOD = ["Is the fur long?", "Does the animal have pointed ears?", "Is the animal indoors?"]


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("".join(c + "\n" for c in CLASSES), encoding="utf-8")
    return path


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_clean_file_passes_and_gets_a_sidecar_that_stage_2_accepts(tmp_path, classes, capsys):
    questions = write(tmp_path / "q.txt", GOOD)
    assert screening_warning(questions).startswith(f"{questions} was never screened")
    assert stage1_main(["--check", str(questions), "--classes", str(classes)]) == 0
    assert "all 3 questions passed the screening against 4 classes" in capsys.readouterr().out
    meta = json.loads(sidecar_path(questions).read_text())
    assert meta["written_by"].startswith("by hand") and meta["num_questions"] == 3
    assert meta["screening"]["passed"] is True and meta["screening"]["num_classes"] == 4
    assert screening_warning(questions) == ""
    # Edited after the check: stage 2 says so, with the command that screens it again.
    write(questions, [*GOOD, "Is the tail curled?"])
    warning = screening_warning(questions)
    assert "changed since it was screened" in warning and "--check" in warning


def test_every_problem_is_listed_with_its_line_and_the_failure_is_recorded(tmp_path, classes, capsys):
    lines = [
        "Is the animal a pug?",  # names a class
        "Is the fur long?",
        "",  # blank
        "Does it have long fur?",  # asks the same as line 2
        "What colour is the coat?",  # not yes/no
        "Is it striped? Answer yes or no.",  # an answer instruction belongs in --answer-suffix
        "Are the ears pointed?",
    ]
    questions = write(tmp_path / "q.txt", lines)
    assert stage1_main(["--check", str(questions), "--classes", str(classes)]) == 2
    captured = capsys.readouterr()
    listed = [line.split(":")[1] for line in captured.out.splitlines()]
    assert listed == ["1", "3", "4", "5", "6"]  # the file's lines; below the blank line, the question's number too
    assert f"{questions}:4: question 3: asks the same as" in captured.out
    assert f"{questions}:1: names the class" in captured.out  # line 1 is question 1: said once
    assert "names the class 'pug'" in captured.out and "asks the same as 'Is the fur long?'" in captured.out
    assert captured.err.startswith(f"error: {questions}: 5 of 6 lines failed the screening against 4 classes")
    record = json.loads(sidecar_path(questions).read_text())["screening"]
    assert record["passed"] is False and [p["line"] for p in record["problems"]] == [1, 3, 4, 5, 6]
    assert [p["number"] for p in record["problems"]] == [1, None, 3, 4, 5]
    # A file stage 2 can read that failed its screening: stage 2 names the first problem.
    leaking = write(tmp_path / "leaking.txt", ["Is the animal a pug?", "Is the fur long?"])
    assert stage1_main(["--check", str(leaking), "--classes", str(classes)]) == 2
    assert "failed its screening (1 question(s), first: line 1, names the class 'pug')" in screening_warning(leaking)


def test_an_existing_sidecar_keeps_its_keys(tmp_path, classes):
    questions = write(tmp_path / "q.txt", GOOD)
    sidecar_path(questions).write_text(json.dumps({"flip_sensitive": [2], "note": "mine"}), encoding="utf-8")
    assert stage1_main(["--check", str(questions), "--classes", str(classes)]) == 0
    meta = json.loads(sidecar_path(questions).read_text())
    assert meta["flip_sensitive"] == [2] and meta["note"] == "mine" and meta["screening"]["passed"] is True


def test_allowed_names_and_the_any_mention_rule_are_those_of_stage_1(tmp_path, classes):
    questions = write(tmp_path / "q.txt", ["Is the coat as fluffy as a Persian's?", "Is the fur long?"])
    assert stage1_main(["--check", str(questions), "--classes", str(classes)]) == 0  # a mention, not the object
    assert stage1_main(["--check", str(questions), "--classes", str(classes), "--class-name-rule", "any_mention"]) == 2
    assert stage1_main(["--check", str(questions), "--classes", str(classes), "--class-name-rule", "any_mention",
                        "--allow-class-name", "Persian"]) == 0  # fmt: skip


def test_check_takes_no_generation_option_and_needs_a_question(tmp_path, classes, capsys):
    questions = write(tmp_path / "q.txt", GOOD)
    assert stage1_main(["--check", str(questions), "--classes", str(classes), "--model", "gpt-4o"]) == 2
    assert "drop --model" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert stage1_main(["--check", str(empty), "--classes", str(classes)]) == 2
    assert "holds no question" in capsys.readouterr().err
    assert not sidecar_path(empty).exists()


def test_generated_and_shipped_files_count_as_screened(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    for shipped in sorted((repo / "questions").glob("*.txt")):
        assert screening_warning(shipped) == "", shipped.name
    generated = write(tmp_path / "gen.txt", GOOD)
    from makd.formats.questions import questions_sha256

    sidecar_path(generated).write_text(json.dumps({"written_by": "makd make_questions (LLM-generated)",
                                                   "sha256": questions_sha256(GOOD)}))  # fmt: skip
    assert screening_warning(generated) == ""


def test_stage_2_warns_about_a_file_that_was_never_screened(tmp_path, capsys, monkeypatch):
    from mllm_fixtures import write_image_folder

    from makd.commands.stage2 import main as stage2_main

    write_image_folder(tmp_path / "images", 2)
    questions = write(tmp_path / "q.txt", GOOD)
    # The warning comes before the model loads: a missing model folder then stops the run.
    code = stage2_main(["--model", str(tmp_path / "no_model"), "--questions", str(questions), "--images",
                        str(tmp_path / "images"), "--output", str(tmp_path / "a.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert f"warning: {questions} was never screened" in err
    assert err.index("never screened") < err.index("error:")
