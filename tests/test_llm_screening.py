"""Screening candidates: yes/no form, class names, exact and near duplicates."""

from __future__ import annotations

from makd.llm.screening import content_words, near_duplicate_reason, screen_questions, summarize_rejections


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
        ("Is the bird's beak lnog?", "nearly repeats \"Is the bird's beak long?\""),
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
