"""DATASET.QUESTIONS_USED, the one key that trains on some questions: the training, test and mirrored-view files are
selected alike, the columns keep their question numbers, and every count that must agree is checked."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from test_augmentation import cfg_of, data_dir  # noqa: F401  (data_dir is a fixture: Q = 3, 2 x 4 train images)
from tool_modules import load_tool

from makd.config import load_cfg
from makd.data.build import build_data
from makd.errors import ConfigError
from makd.formats.aspect_files import read_aspect_file, write_aspect_file
from makd.formats.questions import write_questions
from makd.formats.target_sources.per_image import join_aspects

QUESTIONS = ["Is it red?", "Is the head on the left?", "Is it round?"]


def _test_rows(data_dir) -> dict[str, list[float]]:  # noqa: F811
    rows = {f"{name}/0": [0.11 + c, 0.22, 0.33 + c / 2] for c, name in enumerate(("ant", "bee"))}
    rows = {k: [round(min(v, 0.99), 4) for v in row] for k, row in rows.items()}
    write_aspect_file(data_dir / "test_aspects.json", rows)
    return rows


def test_training_test_and_mirrored_rows_are_selected_alike(data_dir):  # noqa: F811
    test_rows = _test_rows(data_dir)
    whole = read_aspect_file(data_dir / "aspects.json")
    flipped = {i: [round(1 - p, 4) for p in whole.values[k].tolist()] for k, i in enumerate(whole.ids)}
    write_aspect_file(data_dir / "aspects.flip.json", flipped, meta={"view": "hflip"})
    write_questions(data_dir / "q.txt", QUESTIONS)
    opts = ["DATASET.QUESTIONS_USED", "1,3", "DATASET.TEST_ASPECT_JSON", str(data_dir / "test_aspects.json"),
            "DATASET.ASPECT_JSON_FLIP", str(data_dir / "aspects.flip.json"),
            "DATASET.QUESTIONS", str(data_dir / "q.txt")]  # fmt: skip
    data = build_data(cfg_of(data_dir, *opts))
    assert data.num_aspects == 2 and data.aspect_columns.labels() == ["q1", "q3"]
    train_ids = data.train.index.ids
    expected = np.array([whole.values[whole.index()[i]] for i in train_ids])[:, [0, 2]]
    np.testing.assert_allclose(data.train.targets.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        data.test.targets.numpy(), np.array([test_rows[i] for i in data.test.index.ids])[:, [0, 2]], rtol=1e-6
    )
    np.testing.assert_allclose(data.train.flipped_targets.numpy(), 1 - expected, atol=1e-4)
    assert data.aspect_sources[0]["questions_used"] == "1,3" and data.aspect_sources[0]["num_aspects"] == 2
    # a list in YAML is the same selection; order is kept
    assert load_cfg(None, ["DATASET.QUESTIONS_USED", "[3, 1]"]).DATASET.QUESTIONS_USED == "3,1"
    reordered = build_data(cfg_of(data_dir, "DATASET.QUESTIONS_USED", "[3, 1]"))
    assert reordered.aspect_columns.labels() == ["q3", "q1"]
    np.testing.assert_allclose(reordered.train.targets.numpy(), expected[:, ::-1], rtol=1e-6)


def test_flip_questions_keep_their_numbers_in_a_selection(data_dir):  # noqa: F811
    data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS_USED", "2-3", "MaKD.FLIP_SENSITIVE", "[q2]"))
    assert data.recipe["views"]["flip_sensitive"] == ["q2"] and data.train.views.flip_sensitive == [0]  # column 0
    data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS_USED", "1,3", "MaKD.FLIP_SENSITIVE", "[q2]"))
    assert data.recipe["views"]["flip_sensitive"] == []  # q2 is not trained on: nothing to mask
    # a mirror pair with one question left out leaves the other merely flip-sensitive
    mirror = ["MaKD.FLIP_MIRROR", "[[q2, q3]]", "MaKD.FLIP_POLICY", "mirror"]
    data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS_USED", "1,3", *mirror))
    assert data.recipe["views"]["flip_sensitive"] == ["q3"] and data.recipe["views"]["flip_mirror"] == []
    data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS_USED", "2-3", *mirror))
    assert data.recipe["views"]["flip_mirror"] == [["q2", "q3"]]


def test_counts_that_must_agree_are_one_line_each(data_dir, caplog):  # noqa: F811
    _test_rows(data_dir)
    cases = [
        (["DATASET.QUESTIONS_USED", "1,3", "MaKD.ASPECT_NUM", "3"], r"MaKD.ASPECT_NUM is 3 but .*aspects.json has 3 "
         r"aspects per image, of which DATASET.QUESTIONS_USED '1,3' takes 2; set MaKD.ASPECT_NUM 2 \(or 0"),
        (["DATASET.QUESTIONS_USED", "2-4"], r"DATASET.QUESTIONS_USED '2-4': question 4 is past the 3 questions"),
        (["DATASET.QUESTIONS_USED", "0-2"], r"'0-2' is not a range of question numbers \(they count from 1"),
        (["DATASET.QUESTIONS_USED", "first 2"], "is not question numbers"),
        (["DATASET.QUESTIONS_USED", "2"], "could mean question 2 or the first 2 questions; write '1-2'"),
    ]  # fmt: skip
    for opts, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_data(cfg_of(data_dir, *opts))
    write_aspect_file(data_dir / "test_two.json", {"ant/0": [0.1, 0.2], "bee/0": [0.3, 0.4]})
    message = r"test_two.json has 2 aspects per image but DATASET.ASPECT_JSON has 3; .*QUESTIONS_USED then selects"
    with pytest.raises(ConfigError, match=message):
        build_data(cfg_of(data_dir, "DATASET.QUESTIONS_USED", "1-2", "DATASET.TEST_ASPECT_JSON",
                          str(data_dir / "test_two.json")))  # fmt: skip
    # the old way (one ASPECT_SOURCES entry with numbers) still trains, and says what selects the test file too
    with caplog.at_level(logging.WARNING):
        data = build_data(cfg_of(data_dir, "DATASET.ASPECT_JSON", "", "DATASET.ASPECT_SOURCES",
                                 f"[{data_dir / 'aspects.json'}:1-2]"))  # fmt: skip
    assert data.num_aspects == 2 and "DATASET.QUESTIONS_USED '1-2' selects them in the test file" in caplog.text
    # with ASPECT_SOURCES the numbers are those of the assembled questions (entry order)
    sources = f"[{data_dir / 'aspects.json'}:3, {data_dir / 'aspects.json'}:1-2]"
    data = build_data(cfg_of(data_dir, "DATASET.ASPECT_JSON", "", "DATASET.ASPECT_SOURCES", sources,
                             "DATASET.QUESTIONS_USED", "1,3"))  # fmt: skip
    whole = read_aspect_file(data_dir / "aspects.json")
    rows = join_aspects(data.train.index, whole, "error")[1]
    np.testing.assert_allclose(data.train.targets.numpy(), rows[:, [2, 1]], rtol=1e-6)


def test_a_run_on_some_questions_reports_them_by_their_numbers(release_dataset):
    out = release_dataset["root"] / "selected"
    opts = ["OUTPUT_DIR", str(out), "SOLVER.EPOCHS", "1", "DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0",
            "MaKD.ASPECT_NUM", "0", "DATASET.QUESTIONS_USED", "2,4-5",
            "DATASET.TEST_ASPECT_JSON", str(release_dataset["test_aspects"])]  # fmt: skip
    assert load_tool("our_train").main([str(release_dataset["config"]), *opts]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_aspects"] == 3 and summary["questions_used"] == "2,4-5"
    metrics = json.loads((out / "aspect_metrics.json").read_text())["splits"]
    for split in ("train", "test"):
        assert [q["label"] for q in metrics[split]["questions"]] == ["q2", "q4", "q5"]
    teacher = json.loads(release_dataset["aspects"].read_text())
    q4_mean = np.mean([row[3] for row in teacher.values()])
    assert metrics["train"]["questions"][1]["teacher_mean"] == pytest.approx(q4_mean, abs=1e-6)
    assert "test_aspect_mae" in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])  # test rows fit
    with pytest.raises(ConfigError, match="DATASET.QUESTIONS_USED '1' is not read with TASK detection"):
        from makd.tasks.detection import _training_table

        _training_table(load_cfg(None, ["TASK", "detection", "DATASET.QUESTIONS_USED", "'1'"], check=False))


def test_a_mirrored_view_file_of_other_questions_is_refused_before_selection(data_dir):  # noqa: F811
    whole = read_aspect_file(data_dir / "aspects.json")
    two = {i: [round(1 - p, 4) for p in whole.values[k].tolist()[:2]] for k, i in enumerate(whole.ids)}
    write_aspect_file(data_dir / "flip_two.json", two, meta={"view": "hflip"})
    opts = ["DATASET.ASPECT_JSON_FLIP", str(data_dir / "flip_two.json"), "DATASET.QUESTIONS_USED", "1-2"]
    with pytest.raises(ConfigError, match="flip_two.json has 2 aspects per image but DATASET.ASPECT_JSON has 3"):
        build_data(cfg_of(data_dir, *opts))
