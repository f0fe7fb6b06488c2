"""Does a question name the object's class (a label leak), or only use a word that happens to be a class name?

Large class lists hold common nouns (CIFAR-100's `sea`, `can`, `plain`, `orange`; Caltech-101's `watch`,
`Faces`), so "any mention is a leak" rejects good questions ("Is it found in the sea?", "Can it fly?").
The rule here (`names_object`, the default) counts a mention as a leak only where it names the object:

- a class name of two or more words ("maple tree", "Blue Jay") anywhere: such names are specific;
- a one-word name (plural forms too) that is the head of its noun phrase (last word of the question, or
  followed by "or", "of", "in", "visible", ...: "a sea creature" is about creatures) and stands where
  the object is identified:
  * predicate of "Is/Are <subject> a/an <name>" ("Is this a sea?", "Is the object a watch?"),
  * after a verb that shows or identifies ("show", "depict", "contain", "look like", "resemble", "be",
    "a picture/type/kind of"),
  * in an existential ("Is there a watch", "Are there faces", "Is a face visible").
  It is not a leak after a preposition or a verb of having ("found in the sea", "has a face"), as a
  definite subject ("Is the face of the animal visible?"), as a predicate adjective ("Is the object
  orange?") or as a modifier ("sea creature").
The old rule is kept as `any_mention` (every whole-word occurrence is a leak). Use it for classes that
are adjectives (DTD's `striped`: "Is the surface striped?" names the label, which no syntax can tell
from "Is the object orange?"). Tuned on tests/data/real_questions; counts in docs/stage1.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from makd.errors import MakdError

LEAK_RULES = ("names_object", "any_mention")

COPULAS = frozenset("is are was were".split())
DETERMINERS = frozenset("a an the any some this that these those its their one another".split())
INDEFINITE = frozenset("a an any some".split())
PRONOUNS = frozenset("it this that these those they".split())
# A name followed by one of these ends its noun phrase (it is the head, not a modifier).
HEAD_FOLLOWERS = frozenset(
    """or and nor but of in on at near with without from by for to inside outside behind beside next under
    over above below around than that which who visible present shown seen pictured depicted here there
    being is are was were itself alone only s have has had appear appears look looks seem seems show shows
    contain contains possess possesses display displays live lives use uses tend tends typically usually often
    always mostly generally normally""".split()
)
PREPOSITIONS = frozenset(
    """in on at near by from under over into onto with without inside outside behind beside next to of above
    below around through across along among between against toward towards within upon off for about
    than during after before beneath underneath""".split()
)
HAVING = frozenset(
    """have has had having wear wears wearing worn hold holds holding carry carries carrying include includes
    possess possesses possessing""".split()
)
SHOWING = frozenset(
    """show shows showing shown depict depicts depicting depicted contain contains containing display displays
    displaying feature features featuring resemble resembles resembling be called named""".split()
)
LOOK_VERBS = frozenset("look looks looking looked appear appears seem seems".split())
IDENTITY_NOUNS = frozenset(
    """type kind species breed sort variety form example member picture pictures photo photos photograph
    image images drawing illustration""".split()
)
IDENTIFIED = frozenset("identified classified known recognized recognised described".split())
CLOSED_WORDS = (
    COPULAS
    | DETERMINERS
    | PRONOUNS
    | HEAD_FOLLOWERS
    | PREPOSITIONS
    | HAVING
    | SHOWING
    | LOOK_VERBS
    | frozenset("like as does do did can could would should will may might must has have s".split())
)


MAX_MODIFIERS = 2  # adjectives skipped between a determiner and the name ("a small digital watch")


class LeakRuleError(MakdError, ValueError):
    """An unknown class-name rule was asked for."""


def words(text: str) -> list[str]:
    """Lower-case word tokens (punctuation, underscores and hyphens split words): the form names are matched in."""
    return re.sub(r"[^0-9a-z]+", " ", text.lower().replace("_", " ")).split()


def _forms(word: str) -> set[str]:
    """Spellings of `word` in either number: "faces" -> faces, face, ...; "watch" -> watch, watches; "fly" -> flies."""
    forms = {word, word + "s", word + "es"}
    if len(word) > 3 and word.endswith("es"):
        forms.add(word[:-2])
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
    if word.endswith("y") and len(word) > 2:
        forms.add(word[:-1] + "ies")
    return forms


def _occurrences(tokens: Sequence[str], name: Sequence[str]) -> list[int]:
    """Start positions where `name` (its last word in any number) occurs as whole words."""
    n = len(name)
    last = _forms(name[-1])
    return [
        i
        for i in range(len(tokens) - n + 1)
        if list(tokens[i : i + n - 1]) == list(name[:-1]) and tokens[i + n - 1] in last
    ]


def _governor(tokens: Sequence[str], i: int) -> tuple[int, str | None]:
    """(position, determiner) of the word that governs the noun phrase ending at token `i`.

    Walks left over up to MAX_MODIFIERS open-class words and one determiner; through "or"/"and" it
    continues into the first conjunct, so "a round dial or face" is governed by what governs "dial".
    Position -1 = the phrase starts the question.
    """
    j = i - 1
    while True:
        skipped = 0
        while j >= 0 and skipped < MAX_MODIFIERS and tokens[j] not in CLOSED_WORDS:
            j, skipped = j - 1, skipped + 1
        determiner = None
        if j >= 0 and tokens[j] in DETERMINERS:
            determiner, j = tokens[j], j - 1
        if j >= 0 and tokens[j] in ("or", "and") and j > 0:
            j -= 1  # into the first conjunct: its head noun, then its own modifiers and determiner
            continue
        return j, determiner


def names_object(tokens: Sequence[str], start: int, length: int) -> bool:
    """True when the one-word class name at tokens[start] names the object (see the module docstring)."""
    end = start + length
    head = end >= len(tokens) or tokens[end] in HEAD_FOLLOWERS  # else a modifier: "sea creature"
    g, determiner = _governor(tokens, start)
    if g < 0:
        return False
    if start == 2 and tokens[1] == "the":
        # The subject "the <name>" ("Does the cardinal have ...?", "Is the hen colourful?") presupposes the
        # object is one; "the face of the animal" is a part of something else.
        return end >= len(tokens) or tokens[end] != "of"
    if not head:
        return False
    governor = tokens[g]
    if governor in SHOWING:
        return True
    if governor == "like":
        return g > 0 and tokens[g - 1] in LOOK_VERBS
    if governor == "as":
        return g > 0 and tokens[g - 1] in IDENTIFIED
    if governor == "of":
        return g > 0 and tokens[g - 1] in IDENTITY_NOUNS
    if governor in PREPOSITIONS or governor in HAVING:
        return False
    if governor == "there":
        return g > 0 and tokens[g - 1] in COPULAS
    if g == 0:  # an indefinite subject or a bare plural is existential: "Is a watch visible?", "Are faces shown?"
        return determiner in INDEFINITE or (determiner is None and tokens[0] in ("are", "were", "do"))
    if tokens[0] not in COPULAS:
        return False
    # The predicate of "Is <subject> ...": a noun with an article names what the subject is;
    # without one it is an adjective ("Is the object orange?").
    return determiner in ("a", "an") or (determiner == "the" and governor in PRONOUNS)


def class_name_leak(
    question: str, class_names: Iterable[str], rule: str = "names_object", allowed: Iterable[str] = ()
) -> str | None:
    """The first class name `question` leaks under `rule` (as given in `class_names`), or None.

    `allowed` names (compared in the same normalised form) never count: a per-run allow-list.
    """
    if rule not in LEAK_RULES:
        raise LeakRuleError(f"class-name rule {rule!r}: choose one of {', '.join(LEAK_RULES)}")
    tokens = words(question)
    exempt = {" ".join(words(a)) for a in allowed}
    for name in class_names:
        key = words(name)
        if not key or " ".join(key) in exempt:
            continue
        if rule == "any_mention":
            if f" {' '.join(key)} " in f" {' '.join(tokens)} ":
                return name
            continue
        for start in _occurrences(tokens, key):
            if len(key) > 1 or names_object(tokens, start, len(key)):
                return name
    return None
