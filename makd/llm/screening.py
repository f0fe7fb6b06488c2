"""Which candidate questions are kept: acceptable yes/no questions, none a duplicate of another.

The per-question rule is makd.artifacts.question_problem (shared with the questions-file reader);
this module adds near-duplicate detection, which needs the whole list. Two questions are near
duplicates when their normalised texts are equal, when they use the same content words in any
order ("Does the bird have a red crown?" / "Is the bird's crown red?"), or when their normalised
texts are at least 90% alike (difflib ratio) and the words that differ are respellings of each
other (typos, "colour"/"color"); a changed word ("four"/"two engines") keeps them apart.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from makd.artifacts import YES_NO_STARTERS, normalize_text, question_problem

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


@dataclass
class Screening:
    """Kept questions in input order and (question, reason) for each rejected one."""

    kept: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def screen_questions(
    candidates: Iterable[str],
    class_names: Sequence[str] = (),
    allow_class_names: bool = False,
    already_kept: Sequence[str] = (),
) -> Screening:
    """Keep each candidate that is an acceptable yes/no question and no near duplicate of one kept
    before it (or of `already_kept`, from earlier rounds)."""
    result = Screening()
    for raw in candidates:
        text = " ".join(str(raw).split())
        problem = question_problem(text, class_names, allow_class_names)
        if problem is None:
            problem = near_duplicate_reason(text, [*already_kept, *result.kept])
        if problem is None:
            result.kept.append(text)
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
