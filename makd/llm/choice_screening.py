"""Which multiple-choice candidates (LaViD-style, about a class) are kept: the checks of stage-1 screening, adapted.

A candidate is one line "question | option 1 | ... | option M" (makd.formats.class_questions). It is kept when it
parses, has exactly M options (when M is fixed), holds the `<object>` placeholder (the only place the class
name goes), ends its question with "?", names no class of the dataset (makd.formats.class_mentions' rule on the
question; any mention in an option, since an option is a bare answer) and is no near duplicate of a question
kept before it (the yes/no rule of makd.llm.screening on the question text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from makd.formats.class_mentions import class_name_leak
from makd.formats.class_questions import PLACEHOLDER, parse_class_questions
from makd.formats.errors import ArtifactError
from makd.llm.screening import Screening, near_duplicate_reason


def choice_problem(
    line: str, options: int | None, class_names: Sequence[str] = (), rule: str = "names_object"
) -> str | None:
    """Why `line` is not an acceptable multiple-choice question, or None."""
    try:
        (question,) = parse_class_questions(line.strip(), "candidate")
    except (ArtifactError, ValueError) as err:
        return str(err).split(": ", 1)[-1]
    if not question.is_multiple_choice:
        return "has no options (write 'question | option 1 | ... | option M')"
    if options is not None and len(question.options) != options:
        return f"has {len(question.options)} options, not {options}"
    if PLACEHOLDER not in question.text:
        return f"has no {PLACEHOLDER} placeholder (the class is named only through it)"
    if not question.text.endswith("?"):
        return "the question does not end with '?'"
    leaked = class_name_leak(question.text.replace(PLACEHOLDER, "object"), class_names, rule)
    # An option is a bare answer ("Beagle"), not a sentence: the syntax of `rule` cannot see it name the object,
    # and any mention of a class there offers the label as an answer.
    for option in question.options:
        leaked = leaked or class_name_leak(option, class_names, "any_mention")
    if leaked:
        return f"names the class {leaked!r}"
    return None


def screen_multiple_choice(
    candidates: Iterable[str],
    options: int | None = 5,
    class_names: Sequence[str] = (),
    already_kept: Sequence[str] = (),
    leak_rule: str = "names_object",
) -> Screening:
    """Kept lines (normalised: " | " between parts) in input order and (line, reason) for each rejected one."""
    result = Screening()
    kept_questions = [parse_class_questions(k)[0].text for k in already_kept]
    for raw in candidates:
        line = " ".join(str(raw).split())
        problem = choice_problem(line, options, class_names, leak_rule)
        if problem is None:
            question = parse_class_questions(line)[0]
            problem = near_duplicate_reason(question.text, kept_questions)
            if problem is None:
                kept_questions.append(question.text)
                result.kept.append(question.line())
                continue
        result.rejected.append((line, problem))
    return result
