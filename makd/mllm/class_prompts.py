"""Questions about a class name (LaViD-style class-level teachers): the text asked.

The questions come from a class-level questions file (makd.formats.class_questions). `<object>` is replaced by the
class name; a question without it is put into a template that names the class ("Consider a photo of a {class}.
{question}"); several templates are paraphrases whose answers are averaged. Options are shown as lettered lines
(A. .., B. ..) and the answer is read from the letter tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from makd.formats.class_questions import OPTION_LETTERS, PLACEHOLDER, ClassQuestion
from makd.formats.errors import ArtifactError
from makd.mllm.chat_template import with_answer_suffix

DEFAULT_TEMPLATE = "Consider a photo of a {class}. {question}"
PLACEHOLDER_TEMPLATE = "{question}"  # the default when the question names the class itself
# How options are labelled and which tokens are read: letters (makd's default) or digits (LaViD's choice, <= 9).
OPTION_LABELS = {"letters": OPTION_LETTERS, "digits": "123456789"}
CHOICE_INSTRUCTION = "Answer with the {kind} of the correct option only."


def check_templates(templates: Sequence[str], questions: Sequence[ClassQuestion]) -> None:
    """Each template holds {question}; one without {class} would never name the class of a question lacking <object>."""
    for template in templates:
        if "{question}" not in template:
            raise ArtifactError(f"--class-template {template!r} has no {{question}}; e.g. {DEFAULT_TEMPLATE!r}")
        if "{class}" not in template:
            unnamed = [q.text for q in questions if PLACEHOLDER not in q.text]
            if unnamed:
                raise ArtifactError(
                    f"--class-template {template!r} has no {{class}} and the question {unnamed[0]!r} has no "
                    f"{PLACEHOLDER}: the class would never be named; add {{class}} to the template"
                )


def default_templates(questions: Sequence[ClassQuestion]) -> list[str]:
    """ "{question}" when every question holds `<object>`, else the template that names the class."""
    return [PLACEHOLDER_TEMPLATE if all(PLACEHOLDER in q.text for q in questions) else DEFAULT_TEMPLATE]


def option_labels(question: ClassQuestion, labels: str = "letters") -> str:
    """The labels of `question`'s options ("ABC.." or "123.."); more options than labels is an error."""
    if labels not in OPTION_LABELS:
        raise ArtifactError(f"--option-labels {labels!r}: use one of {', '.join(OPTION_LABELS)}")
    if len(question.options) > len(OPTION_LABELS[labels]):
        raise ArtifactError(
            f"{question.text[:60]!r} has {len(question.options)} options; {labels} label at most "
            f"{len(OPTION_LABELS[labels])} (use --option-labels letters)"
        )
    return OPTION_LABELS[labels][: len(question.options)]


def class_query(
    question: ClassQuestion, class_name: str, template: str, answer_suffix: str = "", labels: str = "letters"
) -> str:
    """The user message asking `question` about `class_name`.

    `<object>` is replaced by the class name; a template without {class} puts the question in as it is.
    Yes/no: the answer suffix is appended as at image level. Multiple choice: labelled options, then the
    instruction, so that the first answer token is an option label.
    """
    filled = question.text.replace(PLACEHOLDER, class_name)
    text = template.replace("{class}", class_name).replace("{question}", filled)
    if not question.is_multiple_choice:
        return with_answer_suffix(text, answer_suffix)
    lines = [f"{label}. {option}" for label, option in zip(option_labels(question, labels), question.options)]
    kind = "letter" if labels == "letters" else "number"
    return "\n".join([text, *lines, CHOICE_INSTRUCTION.format(kind=kind)])


def answer_words(
    question: ClassQuestion, yes_word: str = "Yes", no_word: str = "No", labels: str = "letters"
) -> tuple[str, ...]:
    """The answer tokens read for `question`: (yes, no), or its option labels in order."""
    if question.is_multiple_choice:
        return tuple(option_labels(question, labels))
    return (yes_word, no_word)
