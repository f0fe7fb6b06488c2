"""Reply parsing (every shape servers and models answer in) and matching a selection to the candidates."""

from __future__ import annotations

import json

import pytest

from makd.llm.question_pipeline import match_selection
from makd.llm.reply_parsing import parse_reply, strip_marker

QS = ["Is the coat long?", "Are the ears upright?", "Is the photo taken outdoors?"]


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(QS),
        json.dumps({"questions": QS}),
        json.dumps({"selected_questions": QS, "note": "three"}),
        json.dumps({"result": [{"question": q, "aspect": "visual"} for q in QS]}),
        "Here you go:\n```json\n" + json.dumps({"questions": QS}, indent=2) + "\n```\nHope this helps.",
        "Sure. " + json.dumps({"questions": QS}) + " Let me know.",
        "1. Is the coat long?\n2) Are the ears upright?\n(3) Is the photo taken outdoors?",
        "- Is the coat long?\n* Are the ears upright?\n\u2022 Is the photo taken outdoors?",
        "Q1: Is the coat long?\nQuestion 2: Are the ears upright?\n\n**3. Is the photo taken outdoors?**",
        '{\n  "questions": [\n    "Is the coat long?",\n    "Are the ears upright?",\n'
        '    "Is the photo taken outdoors?",',  # cut off by max_tokens
    ],
    ids=["list", "object", "other-key", "objects", "fenced", "prose-wrapped", "numbered", "bulleted", "q-labels",
         "truncated-json"],
)  # fmt: skip
def test_every_reply_shape_gives_the_questions(reply):
    assert parse_reply(reply) == QS


def test_numbers_are_items_and_text_lines_are_kept_for_screening():
    assert parse_reply(json.dumps({"questions": [3, "1", {"index": 2}]})) == [3, 1, 2]
    assert parse_reply("Here are the questions:\n1. Is it red?") == ["Here are the questions:", "Is it red?"]
    assert parse_reply("") == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('  12. "Is it red?",', "Is it red?"),
        ("- **1. Is it red?**", "Is it red?"),
        ("\u201cIs it red?\u201d", "Is it red?"),
        ("Is it 3.5 metres long?", "Is it 3.5 metres long?"),
    ],
)
def test_strip_marker(line, expected):
    assert strip_marker(line) == expected


def test_match_selection_by_text_normalised_text_and_number():
    candidates = ["Is the coat long?", "Are the ears upright?", "Is the photo taken outdoors?", "Is the tail short?"]
    items = ["is the COAT long", 3, "Is the coat long?", "Is the animal friendly?", 9, "Are the ears upright?"]
    found, invented, repeats = match_selection(items, candidates, chosen=["Are the ears upright?"])
    assert found == ["Is the coat long?", "Is the photo taken outdoors?"]
    assert invented == ["Is the animal friendly?", "9"]
    assert repeats == 2  # the coat question twice, the ears question already chosen
