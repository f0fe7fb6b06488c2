"""Turn an LLM reply into a list of items: question texts, or 1-based numbers into a shown list.

Accepted shapes, tried in order: a JSON list; a JSON object holding a list (under "questions" or
any other key); JSON inside a ```json fence or surrounded by prose; and, when there is no JSON,
a plain numbered or bulleted list, one item per line. Servers without structured output, and
models that ignore it, reply in all of these shapes.
"""

from __future__ import annotations

import json
import re
from typing import Any

Item = str | int

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
# "1.", "1)", "(1)", "Q1:", "Question 1:", "-", "*", "•" at the start of a line, then spaces.
_MARKER = re.compile(r"^\s*(?:(?:q(?:uestion)?\s*)?\(?\d+[.):\]]|[-*\u2022\u2013])\s*", re.IGNORECASE)
_PREFERRED_KEYS = ("questions", "selected_questions", "selected", "selection", "items", "answer")
_TEXT_KEYS = ("question", "text", "q")
_NUMBER_KEYS = ("index", "number", "id")


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
            if text is not None:
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


def parse_reply(text: str) -> list[Item]:
    """Items of a reply: str (a question, markers stripped) or int (a 1-based number of a listed question)."""
    for candidate in _json_candidates(text or ""):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        items = _items_from_json(value)
        if items is not None:
            return [i for i in items if i != ""]
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
