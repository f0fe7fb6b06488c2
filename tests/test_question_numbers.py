"""One numbering for questions: q1 is the first question of the questions file, everywhere a user reads or writes
one; the old 0-based flip lists are read where their evidence says so and refused where it cannot."""

from __future__ import annotations

import logging

import pytest
from test_augmentation import cfg_of, data_dir  # noqa: F401  (data_dir is a fixture: Q = 3 questions)

from makd.data.build import build_data
from makd.errors import ConfigError
from makd.formats.question_numbers import (
    AspectColumns,
    as_q_items,
    format_ranges,
    label,
    parse_ranges,
    read_number_lists,
    tag,
)
from makd.formats.questions import write_questions

QUESTIONS = ["Is it red?", "Is the head on the left?", "Is the head on the right?"]


def test_ranges_labels_and_tags_count_from_one():
    assert parse_ranges("1-3,5", "K") == [0, 1, 2, 4]
    assert parse_ranges(" 7 ", "K") == [6]
    assert format_ranges([0, 1, 2, 4, 9, 10]) == "1-3,5,10-11" and format_ranges([]) == ""
    assert format_ranges(parse_ranges("2,4-6,9", "K")) == "2,4-6,9"
    assert (label(0), label(2, 1), tag(2), tag(11, 0)) == ("q1", "q3B", "q03", "q12A")
    assert as_q_items([0, [3, 4]]) == ["q1", ["q4", "q5"]]
    for text, message in (("0-3", "'0-3' is not a range"), ("3-1", "'3-1' is not a range"),
                          ("1,1", "question 1 is listed twice"), ("first 5", "is not question numbers")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            parse_ranges(text, "DATASET.QUESTIONS_USED")


def test_aspect_columns_name_each_column_by_its_question():
    columns = AspectColumns((0, 2, 2, 2), (None, 0, 1, 2), 5)
    assert columns.labels() == ["q1", "q3A", "q3B", "q3C"] and columns.numbers() == [1, 3, 3, 3]
    assert columns.columns_of(2) == [1, 2, 3] and columns.columns_of(1) == []
    assert columns.select([0, 2]).labels() == ["q1", "q3B"] and columns.select([0]).num_questions == 5
    assert AspectColumns.yes_no(3).tags() == ["q01", "q02", "q03"]


# (lists of one source, Q, positions read, warning or refusal)
MIGRATION_CASES = [
    ({"S": ["q1", "q3"], "M": [["q2", "q3"]]}, 3, {"S": [0, 2], "M": [[1, 2]]}, ""),  # the written form
    ({"S": [0, 2]}, 3, {"S": [0, 2]}, "counts questions from 0"),  # a 0: the old form, read and shown rewritten
    ({"S": [0], "M": [[1, 2]]}, 3, {"S": [0], "M": [[1, 2]]}, "read as S ['q1'] and M [['q2', 'q3']]"),  # shared
    ({"S": [1, 3]}, 3, {"S": [0, 2]}, ""),  # Q = 3 is in it: it can only count from 1
    ({"S": [2]}, 3, ConfigError, r"S \[2\]: bare numbers without 0 or 3 .* write S \['q3'\] if they count from 0, "
                                 r"S \['q2'\] if from 1"),  # fmt: skip
    ({"S": [1], "M": [[1, 2]]}, 3, ConfigError, "may count from 0 .* or from 1"),
    ({"S": [0, 3]}, 3, ConfigError, "holds both 0 and 3"),
    ({"S": ["q1", 2]}, 3, ConfigError, "mixes 'q' numbers and bare numbers"),
    ({"S": ["q4"]}, 3, ConfigError, r"'q4' is not a question of the questions file \(q1..q3\)"),
    ({"S": [0, 5]}, 3, ConfigError, "5 is not a question of the questions file"),
    ({"S": ["left"]}, 3, ConfigError, "'left' is not a question number"),
    ({"S": [True]}, 3, ConfigError, "True is not a question number"),
    ({"S": [], "M": []}, 3, {"S": [], "M": []}, ""),
]


@pytest.mark.parametrize("lists, q, expected, note", MIGRATION_CASES)
def test_the_migration_rule_reads_unambiguous_lists_and_refuses_the_rest(lists, q, expected, note):
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=note):
            read_number_lists(lists, q, "")
        return
    read = read_number_lists(lists, q, "")
    assert read.positions == expected
    assert (note in read.warning) if note else read.warning == ""


def test_flip_keys_and_sidecar_are_read_by_their_own_evidence_in_training(data_dir, caplog):  # noqa: F811
    questions = data_dir / "q.txt"
    write_questions(questions, QUESTIONS, meta={"flip_sensitive": [0], "flip_mirror": [[1, 2]]})  # old sidecar
    with caplog.at_level(logging.WARNING):
        data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS", str(questions), "MaKD.FLIP_POLICY", "mirror"))
    views = data.recipe["views"]
    assert views["flip_sensitive"] == ["q1", "q2", "q3"] and views["flip_mirror"] == [["q2", "q3"]]
    assert "q.txt.meta.json: flip_sensitive [0] and flip_mirror [[1, 2]] counts questions from 0" in caplog.text
    # the config's own list is judged on its own: [2] in a 3-question file cannot be told apart
    with pytest.raises(ConfigError, match=r"^MaKD.FLIP_SENSITIVE \[2\]: bare numbers without 0 or 3"):
        build_data(cfg_of(data_dir, "DATASET.QUESTIONS", str(questions), "MaKD.FLIP_SENSITIVE", "[2]"))
    write_questions(questions, QUESTIONS, meta={"flip_sensitive": [2]})
    with pytest.raises(ConfigError, match=r"q.txt.meta.json: flip_sensitive \[2\]: bare numbers without 0 or 3"):
        build_data(cfg_of(data_dir, "DATASET.QUESTIONS", str(questions)))
    write_questions(questions, QUESTIONS, meta={"flip_mirror": [["q2", "q3"]]})
    data = build_data(cfg_of(data_dir, "DATASET.QUESTIONS", str(questions), "MaKD.FLIP_SENSITIVE", "[3, 1]"))
    assert data.recipe["views"]["flip_sensitive"] == ["q1", "q2", "q3"]  # [3, 1] holds Q: 1-based
    with pytest.raises(ConfigError, match=r"MaKD.FLIP_MIRROR: 'q2' is not a pair"):
        build_data(cfg_of(data_dir, "MaKD.FLIP_MIRROR", "[q2, q3]"))
