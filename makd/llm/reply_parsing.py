"""Turn an LLM reply into a list of items: question texts, or 1-based numbers into a shown list.

Accepted shapes, tried in order: a JSON list; a JSON object holding a list (under "questions" or
any other key); JSON inside a ```json fence or surrounded by prose; and, when there is no JSON,
a plain numbered or bulleted list, one item per line. Servers without structured output, and
models that ignore it, reply in all of these shapes.

Multiple-choice replies (`parse_choice_reply`) may also give a question with its options as a JSON object
({"question": ..., "options": [...]}), or as text blocks: a question line, then its options on indented or
lettered lines ("    1. Black", "A) Black"), LaViD's layout. Each becomes one line "question | option | ...",
the class-level questions format (makd.formats.class_questions); the screening then judges it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from makd.formats.class_questions import OPTION_SEPARATOR, lavid_placeholder

Item = str | int

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
# "1.", "1)", "(1)", "Q1:", "Question 1:", "-", "*", "•" at the start of a line, then spaces.
_MARKER = re.compile(r"^\s*(?:(?:q(?:uestion)?\s*)?\(?\d+[.):\]]|[-*\u2022\u2013])\s*", re.IGNORECASE)
_PREFERRED_KEYS = ("questions", "selected_questions", "selected", "selection", "items", "answer")
_TEXT_KEYS = ("question", "text", "q")
_NUMBER_KEYS = ("index", "number", "id")
_OPTION_KEYS = ("options", "choices", "answers")
# An option line: indented and numbered or lettered ("    1. Black", "  b) White"), or an upper-case letter label
# at the start of a line ("A. Black", "(B) White").
_OPTION_LINE = re.compile(r"^(?:\s+\(?(?:\d{1,2}|[A-Za-z])[.):]|\s*\(?[A-Z][.):])\s+(.+?)\s*$")
_OPTION_LABEL = re.compile(r"^\(?(?:[A-Za-z]|\d{1,2})[.):]\s+")


def strip_marker(line: str) -> str:
    """`line` without list numbering/bullets, markdown emphasis, surrounding quotes or a trailing comma."""
    text = line.strip()
    previous = None
    while text != previous:  # markers can nest: '- **1. Is it red?**'
        previous = text
        text = _MARKER.sub("", text).strip()
        text = text.strip("*_`").strip()
        text = text.rstrip(",").strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1].strip()
        if len(text) >= 2 and text[0] == "\u201c" and text[-1] == "\u201d":
            text = text[1:-1].strip()
    return text


def _items_from_json(value: Any) -> list[Item] | None:
    if isinstance(value, dict):
        for key in _PREFERRED_KEYS:
            if isinstance(value.get(key), list):
                return _items_from_json(value[key])
        lists = [v for v in value.values() if isinstance(v, list)]
        return _items_from_json(lists[0]) if len(lists) == 1 else None
    if not isinstance(value, list):
        return None
    items: list[Item] = []
    for entry in value:
        if isinstance(entry, bool):
            continue
        if isinstance(entry, int):
            items.append(entry)
        elif isinstance(entry, str):
            text = entry.strip()
            items.append(int(text) if text.isdigit() else strip_marker(text))
        elif isinstance(entry, dict):
            text = next((entry[k] for k in _TEXT_KEYS if isinstance(entry.get(k), str)), None)
            number = next((entry[k] for k in _NUMBER_KEYS if isinstance(entry.get(k), int)), None)
            options = next((entry[k] for k in _OPTION_KEYS if isinstance(entry.get(k), list)), None)
            if text is not None and options:  # a multiple-choice question: one line, options after " | "
                labelled = [_OPTION_LABEL.sub("", str(o).strip()) for o in options]
                items.append(OPTION_SEPARATOR.join([strip_marker(text), *labelled]))
            elif text is not None:
                items.append(strip_marker(text))
            elif number is not None:
                items.append(number)
    return items


def _json_candidates(text: str) -> list[str]:
    """Substrings of `text` that may be the JSON payload, most likely first."""
    found = [text.strip()]
    found += [m.group(1).strip() for m in _FENCE.finditer(text)]
    for open_char, close_char in (("{", "}"), ("[", "]")):
        start, end = text.find(open_char), text.rfind(close_char)
        if 0 <= start < end:
            found.append(text[start : end + 1])
    return found


def _json_items(text: str) -> list[Item] | None:
    """The items of the reply's JSON payload, or None when it holds none."""
    for candidate in _json_candidates(text or ""):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        items = _items_from_json(value)
        if items is not None:
            return [i for i in items if i != ""]
    return None


def parse_reply(text: str) -> list[Item]:
    """Items of a reply: str (a question, markers stripped) or int (a 1-based number of a listed question)."""
    items = _json_items(text)
    return items if items is not None else _line_items(text)


def _option_blocks(text: str) -> list[Item] | None:
    """Question lines with their option lines joined by " | " (LaViD's "the class" read as "the <object>");
    None when no line is an option line. An option line before any question is kept alone (the screening
    rejects it)."""
    lines = (text or "").splitlines()
    if not any(_OPTION_LINE.match(line) for line in lines):
        return None
    blocks: list[list[str]] = []
    for line in lines:
        option = _OPTION_LINE.match(line)
        if option and blocks:
            blocks[-1].append(option.group(1).strip("*_` "))
        elif line.strip() and not line.strip().startswith("```"):
            blocks.append([lavid_placeholder(strip_marker(line))])
    return [OPTION_SEPARATOR.join(block) for block in blocks if block[0]]


def parse_choice_reply(text: str) -> list[Item]:
    """Items of a multiple-choice reply: JSON first, then question/option blocks, then one item per line."""
    for parse in (_json_items, _option_blocks):
        items = parse(text)
        if items is not None:
            return items
    return _line_items(text)


def _line_items(text: str) -> list[Item]:
    items: list[Item] = []
    for line in (text or "").splitlines():
        if line.strip().startswith("```") or line.strip() in ("{", "}", "[", "]", "],", '"questions": ['):
            continue
        stripped = strip_marker(line)
        if stripped.startswith('"questions"'):
            continue
        if stripped:
            items.append(int(stripped) if stripped.isdigit() else stripped)
    return items
