"""Every prompt text of stage 1, in one place, and how a user replaces them from a YAML file.

The first paragraph of `generate` and of `select` is the paper's instruction word for word
(the MaKD paper, arXiv 2501.13341, including its grammar); what follows it only asks for a reply format we can
check. Templates use {NAME} placeholders (upper case); any other braces, such as the JSON
example, are left as they are, so a prompts file needs no escaping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from makd.errors import MakdError
from makd.formats.strict_yaml import load_yaml

PAPER_GENERATE = (
    "The dataset consists of {C} classes and {M} images. The class list is as follows: {CLASS_LIST}, "
    "Generate {N} feature-specific yes or no questions, focusing on clear and distinct aspects of the "
    "objects in the images in the dataset."
)
PAPER_SELECT = (
    "Select {Q} of the most relevant and distinct questions from the list, focusing on various key "
    "features that distinguish different class in the dataset"
)

_QUESTION_RULES = (
    "Cover visual, categorical and environmental aspects. Each question is one sentence ending in "
    "'?' that can be answered with yes or no by looking at a single image, and it names no class."
)

DEFAULT_GENERATE = (
    PAPER_GENERATE
    + "\n\n"
    + _QUESTION_RULES
    + '\nReply with a JSON object {"questions": [...]} holding the {N} questions.'
)
DEFAULT_SELECT = (
    PAPER_SELECT + ".\n\nThe selection should cover visual, categorical and environmental aspects. Copy each chosen "
    'question exactly as written in the list.\nReply with a JSON object {"questions": [...]} holding the {Q} '
    "chosen questions."
)
# Follow-up turns, used only when a reply falls short (bounded by --max-rounds).
DEFAULT_GENERATE_MORE = (
    "{PROBLEMS} Generate {K} more feature-specific yes or no questions, different from every question "
    "above. " + _QUESTION_RULES + '\nReply with a JSON object {"questions": [...]} holding the {K} new questions.'
)
DEFAULT_SELECT_MORE = (
    "{PROBLEMS} Select {K} more questions from the list, none of them already chosen, copying each exactly "
    'as written.\nReply with a JSON object {"questions": [...]} holding the {K} additional questions.'
)
DEFAULT_SELECT_EXACT = (
    "{PROBLEMS} Select exactly {Q} questions from the list, copying each exactly as written.\n"
    'Reply with a JSON object {"questions": [...]} holding the {Q} questions.'
)

# Placeholders each template may use; anything else in {UPPER_CASE} is a typo we report.
# {OPTIONS} is the number of options of a multiple-choice question (--options).
PLACEHOLDERS = {
    "generate": {"C", "M", "N", "Q", "OPTIONS", "CLASS_LIST"},
    "select": {"C", "M", "N", "Q", "OPTIONS", "CLASS_LIST", "QUESTION_LIST"},
    "generate_more": {"C", "M", "N", "Q", "OPTIONS", "CLASS_LIST", "K", "PROBLEMS"},
    "select_more": {"C", "M", "N", "Q", "OPTIONS", "CLASS_LIST", "K", "PROBLEMS"},
    "select_exact": {"C", "M", "N", "Q", "OPTIONS", "CLASS_LIST", "PROBLEMS"},
    "system": set(),
}
_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z_]*)\}")


class PromptError(MakdError, ValueError):
    """A prompt template or prompts file is malformed."""


@dataclass(frozen=True)
class PromptSet:
    """The templates of one run. `system` is sent as a system message when not empty."""

    generate: str = DEFAULT_GENERATE
    select: str = DEFAULT_SELECT
    generate_more: str = DEFAULT_GENERATE_MORE
    select_more: str = DEFAULT_SELECT_MORE
    select_exact: str = DEFAULT_SELECT_EXACT
    system: str = ""

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def uses(self, name: str, placeholder: str) -> bool:
        return placeholder in placeholders_of(getattr(self, name))


def placeholders_of(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, values: Mapping[str, object], where: str = "template") -> str:
    """`template` with each {NAME} replaced by str(values[NAME]); a missing value raises PromptError."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in values or values[name] is None:
            raise PromptError(f"{where} uses {{{name}}} but no value is known for it")
        return str(values[name])

    return _PLACEHOLDER.sub(replace, template)


# The prompt sets shipped with makd (package data, see setup.py).
PROMPT_FILES = Path(__file__).resolve().parent / "prompt_files"
MULTIPLE_CHOICE_PROMPTS = PROMPT_FILES / "lavid_multiple_choice.yaml"  # LaViD's, for `--kind multiple-choice`


def load_prompts(path: str | os.PathLike) -> PromptSet:
    """A PromptSet from a YAML mapping with keys among generate, select, generate_more, select_more,
    select_exact, system; keys left out keep the defaults."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompts file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))  # a key written twice is an error
    except yaml.YAMLError as err:
        raise PromptError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PromptError(f"{path}: expected a mapping with keys {', '.join(PLACEHOLDERS)}")
    unknown = sorted(set(data) - set(PLACEHOLDERS))
    if unknown:
        raise PromptError(f"{path}: unknown key {unknown[0]!r}; use one of {', '.join(PLACEHOLDERS)}")
    for key, value in data.items():
        if not isinstance(value, str) or (key != "system" and not value.strip()):
            raise PromptError(f"{path}: {key} must be a non-empty text, got {value!r}")
        bad = sorted(placeholders_of(value) - PLACEHOLDERS[key])
        if bad:
            allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS[key])) or "none"
            raise PromptError(f"{path}: {key} uses unknown placeholder {{{bad[0]}}}; allowed: {allowed}")
    return PromptSet(**{k: v.strip("\n") for k, v in data.items()})
