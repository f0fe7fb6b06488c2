"""Screening candidates: yes/no form, class names, exact and near duplicates; real LLM questions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mirrors import mirror

from makd.formats.errors import ArtifactError
from makd.formats.questions import parse_questions_text, question_problem
from makd.llm.screening import (
    content_words,
    near_duplicate_reason,
    read_allow_list,
    screen_questions,
    split_answer_suffix,
    summarize_rejections,
)
from makd.llm.screening_eval import lavid_items, lavid_question_files, read_labelled, refused_files, score


def test_each_kind_of_bad_candidate_is_rejected_with_its_reason():
    candidates = [
        "Is the bird's beak long?",
        "What colour is the beak?",
        "The beak is long.",
        "Is the beak long? Is it curved?",
        "Is this a Blue Jay?",
        "Does the bird stand in water. Is it wet?",
        "Is the crown red?",
        "  Is   the crown   red?  ",
        "Does the bird have a red crown?",
        "Is the crown of the bird red?",
        "Is the bird's beak lnog?",
    ]
    result = screen_questions(candidates, class_names=["Blue_Jay", "Cardinal"])
    assert result.kept == ["Is the bird's beak long?", "Is the crown red?", "Does the bird have a red crown?"]
    assert result.rejected == [
        ("What colour is the beak?", "does not start like a yes/no question ('what')"),
        ("The beak is long.", "does not end with '?'"),
        ("Is the beak long? Is it curved?", "holds more than one question mark"),
        ("Is this a Blue Jay?", "names the class 'Blue_Jay'"),
        ("Does the bird stand in water. Is it wet?", "holds more than one sentence"),
        ("Is the crown red?", "repeats 'Is the crown red?'"),  # spaces normalised before the check
        ("Is the crown of the bird red?", "asks the same as 'Does the bird have a red crown?'"),
        ("Is the bird's beak lnog?", 'nearly repeats "Is the bird\'s beak long?"'),
    ]


def test_class_names_are_allowed_when_asked_for():
    result = screen_questions(["Does it look like a Cardinal?"], ["Cardinal"], allow_class_names=True)
    assert result.kept == ["Does it look like a Cardinal?"]


def test_earlier_rounds_count_as_kept():
    result = screen_questions(["Is the crown red?", "Is the tail long?"], already_kept=["Is the crown red?"])
    assert result.kept == ["Is the tail long?"]


def test_different_aspects_are_not_duplicates():
    # Similar wording, different aspect: must survive (a too-eager rule would shrink the candidate pool).
    pairs = [
        ("Is the object red?", "Is the object blue?"),
        ("Is the coat long?", "Is the coat short?"),
        ("Does the aircraft have four engines?", "Does the aircraft have two engines?"),
        ("Is the background a blue sky?", "Is the background a forest?"),
    ]
    for first, second in pairs:
        assert near_duplicate_reason(second, [first]) is None, (first, second)


def test_respellings_are_near_duplicates():
    assert near_duplicate_reason("Is the beak colour bright?", ["Is the beak color bright?"]) == (
        "nearly repeats 'Is the beak color bright?'"
    )


def test_content_words_drop_function_words_and_plurals():
    assert content_words("Does the image show two wheels?") == {"show", "two", "wheel"}
    assert content_words("Are there wheels visible in the photo?") == {"wheel"}


def test_summary_is_one_line_with_a_count():
    rejected = [(f"Question {i}", "does not end with '?'") for i in range(5)]
    text = summarize_rejections(rejected, limit=2)
    assert text.startswith("5 rejected ('Question 0'") and text.endswith("and 3 more)") and "\n" not in text


# ----------------------------------------------------------------------------- real LLM questions (issue 10.5)
REPO = Path(__file__).resolve().parents[1]
LAVID = mirror("lliangthomas/lavid")
CIFAR = [c for c in (REPO / "questions" / "classes" / "cifar100.txt").read_text().splitlines() if c]
CALTECH = [c for c in (REPO / "questions" / "classes" / "caltech101.txt").read_text().splitlines() if c]


@pytest.mark.parametrize(
    ("question", "classes", "leaked"),
    [
        ("Is it found in the sea?", CIFAR, None),
        ("Can it fly?", CIFAR, None),  # CIFAR-100 has a class `can`
        ("Is the object orange in color?", CIFAR, None),
        ("Is the object larger than a man?", CIFAR, None),
        ("Is it a sea creature?", CIFAR, None),
        ("Is this a sea?", CIFAR, "sea"),
        ("Is the object a clock or a lamp?", CIFAR, "clock"),
        ("Is there a maple tree in the image?", CIFAR, "maple_tree"),
        ("Does the animal have a face with whiskers?", CALTECH, None),
        ("Is the face of the animal visible?", CALTECH, None),
        ("Can you watch moving images on it?", CALTECH, None),
        ("Is the object shaped like a pyramid?", CALTECH, None),
        ("Is the object a watch?", CALTECH, "watch"),
        ("Are there faces in the image?", CALTECH, "Faces"),
        ("Does it look like an airplane?", CALTECH, "airplanes"),
        ("Does the image contain a pyramid?", CALTECH, "pyramid"),
        ("Does the watch have a leather strap?", CALTECH, "watch"),
    ],
)
def test_class_names_leak_only_where_they_name_the_object(question, classes, leaked):
    expected = None if leaked is None else f"names the class {leaked!r}"
    assert question_problem(question, classes) == expected


def test_the_any_mention_rule_flags_every_whole_word_mention():
    # For classes that are adjectives (DTD's "striped") only this rule sees the leak.
    assert question_problem("Is the surface striped?", ["striped"]) is None
    assert question_problem("Is the surface striped?", ["striped"], leak_rule="any_mention") == (
        "names the class 'striped'"
    )
    assert question_problem("Is it found in the sea?", CIFAR, leak_rule="any_mention") == "names the class 'sea'"


def test_abbreviations_end_no_sentence_but_two_sentences_still_fail():
    for question in (
        "Does the object have a smooth surface (e.g. glass or metal)?",
        "Is it found indoors, i.e. inside a house?",
        "Is it made by humans (vs. occurring in nature)?",
        "Does it have fins, gills, etc. like a fish?",
    ):
        assert question_problem(question) is None, question
    assert question_problem("Is it red. Is it round?") == "holds more than one sentence"


def test_questions_file_with_stray_whitespace_is_normalised_with_one_warning(caplog):
    text = "Is it red?  \n  Is the   tail long?\nIs it round?\n"
    with caplog.at_level(logging.WARNING, logger="makd.formats.questions"):
        assert parse_questions_text(text, "q.txt") == ["Is it red?", "Is the tail long?", "Is it round?"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "q.txt" in warnings[0] and "2 line(s) (first: line 1)" in warnings[0]
    # Blank lines are ignored, as in every text list (makd.formats.text_lists); messages keep the file's lines.
    assert parse_questions_text("Is it red?\n   \nIs it round?\n", "q.txt") == ["Is it red?", "Is it round?"]
    with pytest.raises(ArtifactError, match=r"q.txt:3: 'Is it round' is not a question"):
        parse_questions_text("Is it red?\n\nIs it round\n", "q.txt")


def test_the_papers_answer_instruction_is_split_off_as_the_stage2_suffix():
    from makd.commands.stage2 import PAPER_ANSWER_SUFFIX

    assert split_answer_suffix(f"Is the crown red?  {PAPER_ANSWER_SUFFIX}") == (
        "Is the crown red?",
        PAPER_ANSWER_SUFFIX,
    )
    assert split_answer_suffix("Is it red? Answer with yes or no.") == ("Is it red?", "Answer with yes or no.")
    assert split_answer_suffix("Is it red? (Yes/No)") == ("Is it red?", "(Yes/No)")
    assert split_answer_suffix("Is it red? Is it round?") == ("Is it red? Is it round?", "")
    result = screen_questions([f"Is the crown red? {PAPER_ANSWER_SUFFIX}", f"Is the tail long? {PAPER_ANSWER_SUFFIX}"])
    assert result.kept == ["Is the crown red?", "Is the tail long?"] and result.rejected == []
    assert result.answer_suffixes == {PAPER_ANSWER_SUFFIX: 2}
    assert "--answer-suffix" in result.suffix_note() and result.suffix_note().startswith("2 questions")
    assert screen_questions(["Is it red?"]).suffix_note() == ""


def test_a_per_run_allow_list_lets_named_classes_through(tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text("# common nouns this run may use\nwatch  # wrist watch is an aspect here\n\nsea\n")
    assert read_allow_list(allow) == ["watch", "sea"]
    result = screen_questions(
        ["Is the object a watch?", "Is this a sea?", "Is the object a lamp?"],
        CALTECH + ["sea"],
        allowed_names=read_allow_list(allow),
    )
    assert result.kept == ["Is the object a watch?", "Is this a sea?"]
    assert result.rejected == [("Is the object a lamp?", "names the class 'lamp'")]
    with pytest.raises(ArtifactError, match="allow-list"):
        read_allow_list(tmp_path / "missing.txt")


def test_hand_labelled_real_style_questions_have_no_false_alarm_and_no_miss():
    items = read_labelled(REPO / "tests" / "data" / "real_questions", REPO / "questions" / "classes")
    result = score(items)
    counts = result["counts"]
    assert (counts["ok"], counts["leak"], counts["bad"]) == (51, 25, 6)
    assert result["errors"] == []
    # The same set under the old rule (any mention is a leak) raises false alarms on common nouns.
    old = sum(
        question_problem(i.question, i.classes, leak_rule="any_mention") is not None for i in items if i.label == "ok"
    )
    assert old == 14


@pytest.mark.skipif(not LAVID.is_dir(), reason="LaViD mirror not present")
def test_lavid_llm_questions_pass_the_reader_and_the_screening():
    files = lavid_question_files(LAVID)
    result = score(lavid_items(LAVID, files))
    counts = result["counts"]
    assert counts["ok"] == counts["leak"] == 396
    assert counts.get("false_alarms", 0) == 0 and counts.get("missed_bad", 0) == 0
    # Known misses: the name inside a prepositional phrase ("the surface of the stingray"), which the rule
    # cannot tell from a place ("found in the sea") without semantics.
    assert counts["missed_leak"] == 7
    assert refused_files(files) == (0, 22)  # trailing spaces no longer refuse a file
