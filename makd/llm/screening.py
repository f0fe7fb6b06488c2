"""Which candidate questions are kept: acceptable yes/no questions, none a duplicate of another.

The per-question rule is makd.formats.questions.question_problem (shared with the questions-file reader;
class names count only where they name the object, makd.formats.class_mentions); this module adds the
answer-instruction split (the paper's "The answer must always be either Yes or No ..." after the
question becomes stage 2's --answer-suffix, not a rejection), the per-run allow-list of class names,
and near-duplicate detection, which needs the whole list. Two questions are near
duplicates when their normalised texts are equal, when they use the same content words in any
order ("Does the bird have a red crown?" / "Is the bird's crown red?"), or when their normalised
texts are at least 90% alike (difflib ratio) and the words that differ are respellings of each
other (typos, "colour"/"color"); a changed word ("four"/"two engines") keeps them apart.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from makd.formats.errors import ArtifactError
from makd.formats.questions import YES_NO_STARTERS, normalize_text, question_problem

NEAR_DUPLICATE_RATIO = 0.9
SPELLING_RATIO = 0.7  # two words this alike (difflib ratio) count as spellings of one word
# Function words that carry no aspect; removing them leaves what a question is about.
_FUNCTION_WORDS = (
    frozenset(
        """a an the this that these those it its s of in on at to for from with by as and or any some
    there their they them image photo picture shown visible appear appears seem seems look looks
    have has having be been being very""".split()
    )
    | YES_NO_STARTERS
)


def content_words(text: str) -> frozenset[str]:
    """The words of `text` that say what it asks about (function words dropped, plural 's' removed)."""
    words = set()
    for word in normalize_text(text).split():
        if word in _FUNCTION_WORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return frozenset(words)


@functools.lru_cache(maxsize=4096)
def _keys(text: str) -> tuple[str, frozenset[str]]:
    return normalize_text(text), content_words(text)


def _alike(first: str, second: str) -> bool:
    matcher = difflib.SequenceMatcher(None, first, second)
    # The quick upper bounds reject most pairs before the full (quadratic) ratio is computed.
    return (
        matcher.real_quick_ratio() >= NEAR_DUPLICATE_RATIO
        and matcher.quick_ratio() >= NEAR_DUPLICATE_RATIO
        and matcher.ratio() >= NEAR_DUPLICATE_RATIO
    )


def near_duplicate_reason(text: str, earlier: Sequence[str]) -> str | None:
    """Why `text` duplicates one of `earlier` (quoting it), or None."""
    key, words = _keys(text)
    for other in earlier:
        other_key, other_words = _keys(other)
        if key == other_key:
            return f"repeats {other!r}"
        if words and words == other_words:
            return f"asks the same as {other!r}"
        if _alike(key, other_key) and _same_words_but_spelling(words, other_words):
            return f"nearly repeats {other!r}"
    return None


def _same_words_but_spelling(first: frozenset[str], second: frozenset[str]) -> bool:
    """True when every content word only one side has is a respelling of one only the other side has
    ("colour"/"color", "lnog"/"long"), so "four engines"/"two engines" stay different questions."""
    only_first, only_second = sorted(first - second), sorted(second - first)
    if len(only_first) != len(only_second):
        return False
    return all(difflib.get_close_matches(w, only_second, n=1, cutoff=SPELLING_RATIO) for w in only_first)


# An instruction on how to answer, written after the question ("Is it red? Answer yes or no."): the
# paper's Figure 2 suffix "The answer must always be either Yes or No (do not provide any other response)."
# and the usual variants. It belongs in stage 2's --answer-suffix, so it is split off, not rejected.
_ANSWER_INSTRUCTION = re.compile(
    r"""^(?:\(\s*)?(?:
        (?:the\s+)?answer\s+(?:must|should|has\s+to|needs\s+to|can\s+only)\b.*\byes\b.*\bno\b.*
      | (?:please\s+)?(?:only\s+)?(?:answer|respond|reply)(?:\s+only)?\s+(?:with\s+)?(?:either\s+)?["']?yes\b.*\bno\b.*
      | yes\s*(?:/|or)\s*no\W*
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


def split_answer_suffix(text: str) -> tuple[str, str]:
    """(question, answer instruction after it) when `text` is "<question>? <instruction>", else (text, "").

    "Is it red? Answer with yes or no." -> ("Is it red?", "Answer with yes or no.")
    """
    text = " ".join(str(text).split())
    mark = text.find("?")
    if mark < 0 or mark == len(text) - 1:
        return text, ""
    tail = text[mark + 1 :].strip()
    if _ANSWER_INSTRUCTION.match(tail):
        return text[: mark + 1], tail
    return text, ""


def read_allow_list(path: str | os.PathLike) -> list[str]:
    """Class names that may appear in questions for one run: one per line, "#" starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"allow-list {path}: cannot read it ({err})") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


@dataclass
class Screening:
    """Kept questions in input order, (question, reason) for each rejected one, and the answer
    instructions split off kept questions (instruction -> how many questions carried it)."""

    kept: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    answer_suffixes: dict[str, int] = field(default_factory=dict)

    def suffix_note(self) -> str:
        """One line for the user when questions carried an answer instruction, else ""."""
        if not self.answer_suffixes:
            return ""
        suffix, count = max(self.answer_suffixes.items(), key=lambda item: item[1])
        return (
            f"{sum(self.answer_suffixes.values())} questions ended with an answer instruction ({suffix!r}); it was "
            f"stripped from them: pass it to stage 2 as --answer-suffix {suffix!r} (the --paper-suffix text) instead"
        )


def screen_questions(
    candidates: Iterable[str],
    class_names: Sequence[str] = (),
    allow_class_names: bool = False,
    already_kept: Sequence[str] = (),
    *,
    allowed_names: Iterable[str] = (),
    leak_rule: str = "names_object",
) -> Screening:
    """Keep each candidate that is an acceptable yes/no question and no near duplicate of one kept
    before it (or of `already_kept`, from earlier rounds). Whitespace is normalised and an answer
    instruction after the question is split off (see split_answer_suffix); `allowed_names` are class
    names that may appear (a per-run allow-list); `leak_rule` is makd.formats.class_mentions' rule."""
    result = Screening()
    allowed_names = list(allowed_names)
    for raw in candidates:
        text, suffix = split_answer_suffix(str(raw))
        problem = question_problem(
            text, class_names, allow_class_names, leak_rule=leak_rule, allowed_names=allowed_names
        )
        if problem is None:
            problem = near_duplicate_reason(text, [*already_kept, *result.kept])
        if problem is None:
            result.kept.append(text)
            if suffix:
                result.answer_suffixes[suffix] = result.answer_suffixes.get(suffix, 0) + 1
        else:
            result.rejected.append((text, problem))
    return result


def summarize_rejections(rejected: Sequence[tuple[str, str]], limit: int = 3) -> str:
    """One line: how many were rejected and the first few with their reasons."""
    if not rejected:
        return "none rejected"
    shown = "; ".join(f"{text[:60]!r}: {reason}" for text, reason in rejected[:limit])
    more = f"; and {len(rejected) - limit} more" if len(rejected) > limit else ""
    return f"{len(rejected)} rejected ({shown}{more})"
