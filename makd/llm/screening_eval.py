"""How often the question screening is wrong on real LLM-style questions: false alarms and misses.

Two sets:
- labelled: tests/data/real_questions/<classes>.txt, lines `<label><TAB><question>` with label ok / leak /
  bad, written for this project; the class list is questions/classes/<classes>.txt.
- LaViD (read from a local mirror of github.com/lliangthomas/lavid, never copied): the question lines of
  its questions/*/*.txt, LLM-written, each asked about "the class". A yes/no-form line becomes two
  items: "the class" -> "the object" (label ok, or bad when it does not end with "?") and "the class" ->
  "the <a class name of that dataset>" (label leak: it names the object). Class lists come from its
  lavid/data/classes/*.json. Its raw files (trailing spaces kept) also test the questions-file reader.

A false alarm is an ok item the screening rejects; a miss is a leak or bad item it keeps. Only
`screen_questions` and `parse_questions_text` are called, so the same code scores an older checkout
(the "before" figures in docs/stage1.md). Run: python tools/eval_screening.py [--lavid MIRROR_GIT_DIR].
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from makd.formats.errors import ArtifactError
from makd.formats.questions import YES_NO_STARTERS, parse_questions_text
from makd.llm.screening import screen_questions

LABELS = ("ok", "leak", "bad")
LAVID_CLASS_FILES = {"waterbird": "cub200"}  # dataset folder -> lavid/data/classes/<name>_classes.json
_OPTION = re.compile(r"^\s*(?:\d+[.)]|[-*])\s")
_THE_CLASS = re.compile(r"\bthe class\b", re.IGNORECASE)


@dataclass(frozen=True)
class LabelledQuestion:
    label: str  # ok | leak | bad
    question: str
    classes: tuple[str, ...]
    source: str


def read_labelled(folder: str | Path, classes_folder: str | Path) -> list[LabelledQuestion]:
    """The hand-labelled set: every <name>.txt of `folder` with the class list classes_folder/<name>.txt."""
    items = []
    for path in sorted(Path(folder).glob("*.txt")):
        classes = tuple(c.strip() for c in (Path(classes_folder) / path.name).read_text().splitlines() if c.strip())
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            label, _, question = line.partition("\t")
            if label not in LABELS or not question:
                raise ArtifactError(f"{path}:{number}: expected `<ok|leak|bad><TAB><question>`")
            items.append(LabelledQuestion(label, question, classes, f"{path.name}:{number}"))
    return items


def _git_show(mirror: Path, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(mirror), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def lavid_question_files(mirror: str | Path) -> dict[str, str]:
    """{path: text} of LaViD's question files (questions/**/*.txt) in the mirror's HEAD."""
    listing = subprocess.run(
        ["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", "HEAD", "questions"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {p: _git_show(Path(mirror), p) for p in listing if p.endswith(".txt")}


def lavid_items(mirror: str | Path, files: dict[str, str] | None = None) -> list[LabelledQuestion]:
    """The LaViD set (see the module docstring), deterministic: class names taken in list order."""
    files = lavid_question_files(mirror) if files is None else files
    items = []
    class_lists: dict[str, tuple[str, ...]] = {}
    for path, text in sorted(files.items()):
        dataset = path.split("/")[1]
        name = LAVID_CLASS_FILES.get(dataset, dataset)
        if name not in class_lists:
            names = json.loads(_git_show(Path(mirror), f"lavid/data/classes/{name}_classes.json"))
            class_lists[name] = tuple(names)
        classes = class_lists[name]
        used = 0
        for number, line in enumerate(text.splitlines(), start=1):
            question = line.strip()
            if not question or _OPTION.match(line):
                continue
            first = re.split(r"[\s,]+", question, maxsplit=1)[0].lower()
            if first not in YES_NO_STARTERS or not _THE_CLASS.search(question):
                continue
            label = "ok" if question.endswith("?") else "bad"
            where = f"{path}:{number}"
            items.append(LabelledQuestion(label, _THE_CLASS.sub("the object", question), classes, where))
            leak = _THE_CLASS.sub(f"the {classes[used % len(classes)]}", question)
            items.append(LabelledQuestion("leak" if label == "ok" else "bad", leak, classes, where))
            used += 1
    return items


def verdict(item: LabelledQuestion, screen: Callable = screen_questions) -> str | None:
    """The screening's reason for rejecting `item`, or None when it keeps it."""
    result = screen([item.question], list(item.classes))
    return result.rejected[0][1] if result.rejected else None


def score(items: Sequence[LabelledQuestion]) -> dict:
    """Counts per label and the errors: false alarms (ok rejected) and misses (leak/bad kept)."""
    counts: Counter = Counter()
    errors = []
    for item in items:
        reason = verdict(item)
        counts[item.label] += 1
        wrong = (reason is not None) if item.label == "ok" else (reason is None)
        if wrong:
            counts["false_alarms" if item.label == "ok" else f"missed_{item.label}"] += 1
            errors.append((item, reason))
    return {"counts": dict(counts), "errors": errors}


def refused_files(files: dict[str, str]) -> tuple[int, int]:
    """(refused, tried): question files built from each LaViD file's yes/no lines, whitespace kept as
    written, that the questions-file reader refuses."""
    refused = tried = 0
    for path, text in sorted(files.items()):
        lines = [
            line
            for line in text.splitlines()
            if line.strip()
            and not _OPTION.match(line)
            and line.strip().endswith("?")
            and re.split(r"[\s,]+", line.strip(), maxsplit=1)[0].lower() in YES_NO_STARTERS
        ]
        unique = list(dict.fromkeys(lines))
        if not unique:
            continue
        tried += 1
        try:
            parse_questions_text("\n".join(unique) + "\n", path)
        except ArtifactError:
            refused += 1
    return refused, tried
