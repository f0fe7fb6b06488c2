"""JSON read strictly: a key written twice in one object is an error naming both lines, never a silent last-wins.

`json.loads` keeps the last of two equal keys of an object and drops the first without a word: a COCO file with
`"annotations"` twice trains on the second list only, a sidecar with two `"questions_sha256"` checks the wrong one.
Every JSON file the project reads (aspect files and their sidecars, per-class target files, COCO instances, class
maps, truth files, run summaries) goes through `loads_json` (or makd.formats.files.read_json, which reads it first).

The check rides on json's C parser (`object_pairs_hook` builds each object with `dict(pairs)` and compares the
lengths): parsing a 100k-row aspect file costs about a fifth more CPU than plain `json.loads`, as the aspect reader's
own hook did before, and a COCO file of 100k boxes about 6 % more (tools/bench_strict_parsing.py). Only a file that
does repeat a key is scanned again, in Python, to find the two lines and the object holding them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from makd.formats.errors import DuplicateKeyError, line_pair


class _Repeated(Exception):
    """Raised inside json's parser at the first object with a repeated key (located afterwards)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: the object as a dict; _Repeated when two pairs share a key."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Repeated()
    return obj


def loads_json(text: str, source: str) -> Any:
    """`json.loads(text)`, except that a repeated key in any object is a DuplicateKeyError naming `source`, the key,
    the object holding it and both lines. Malformed JSON raises json.JSONDecodeError, as json.loads does."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _Repeated:
        found = locate_duplicate_key(text)
        if found is None:  # cannot happen: the scanner compares keys as json does
            raise DuplicateKeyError(f"{source}: an object names a key twice", "", "", (0, 0)) from None
        where, key, lines = found
        place = f" in {where}" if where else " at the top level"
        raise DuplicateKeyError(
            f"{source}: key {key!r} appears twice{place} ({line_pair(lines)}); JSON would keep only "
            "the second and silently drop the first: keep one",
            key,
            where,
            lines,
        ) from None


# Tokens of a JSON text already known to parse up to the repeated key: strings, punctuation, other scalars.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.DOTALL)


def locate_duplicate_key(text: str) -> tuple[str, str, tuple[int, int]] | None:
    """(path of the object, key, (first line, second line)) of the first key repeated within one object, in text
    order; None when no object repeats a key. Paths read like "annotations[3]" ("" for the top-level object)."""
    # One frame per open container: objects {"path", "keys": {key: line}, "last": last key, "expect_key"}, arrays
    # {"path", "index"}.
    stack: list[dict[str, Any]] = []
    line, counted_to = 1, 0
    for match in _TOKEN.finditer(text):
        token, start = match.group(), match.start()
        if token in "{[":
            if not stack:
                path = ""
            elif "keys" in stack[-1]:
                path = f"{stack[-1]['path']}.{stack[-1]['last']}" if stack[-1]["path"] else stack[-1]["last"]
            else:
                path = f"{stack[-1]['path']}[{stack[-1]['index']}]"
            if token == "{":
                stack.append({"path": path, "keys": {}, "last": "", "expect_key": True})
            else:
                stack.append({"path": path, "index": 0})
        elif token in "}]":
            if stack:
                stack.pop()
        elif token == ",":
            if stack and "keys" in stack[-1]:
                stack[-1]["expect_key"] = True
            elif stack:
                stack[-1]["index"] += 1
        elif token.startswith('"') and stack and stack[-1].get("expect_key"):
            line += text.count("\n", counted_to, start)
            counted_to = start
            key = json.loads(token)
            frame = stack[-1]
            frame["expect_key"] = False
            if key in frame["keys"]:
                return frame["path"], key, (frame["keys"][key], line)
            frame["keys"][key] = line
            frame["last"] = key
    return None
