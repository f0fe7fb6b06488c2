"""The chat prompt of an InternVL teacher: one image, one question, the assistant turn open.

`model.chat` of the remote code fills the conversation template its config names (`template`: "internvl2_5" for
InternVL2.5/3, "Hermes-2", "internlm2-chat" or "phi3-chat" for InternVL2) from the `conversation.py` the
checkpoint ships: system block, one user turn holding `<image>\\n{question}`, an open assistant turn. The
`<image>` placeholder is then replaced by `<img>` + `<IMG_CONTEXT>` x (tokens per tile x tiles) + `</img>`.

A `ChatFormat` is that recipe for one teacher. The remote backend builds it from the checkpoint's own
`get_conv_template` (`conversation_format`), so the prompt is the real code's, whatever the template; native
"-hf" checkpoints ship no conversation code and use the one copy of the "internvl2_5" template below, which is
what their remote-code twins' `chat` builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

TEMPLATE_NAME = "internvl2_5"
DEFAULT_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
IMAGE_START_TOKEN = "<img>"
IMAGE_END_TOKEN = "</img>"
IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"
IMAGE_PLACEHOLDER = "<image>"
TOKENS_PER_TILE = 256  # 448-px tile, patch 14, pixel-shuffle 0.5: (448 / 14)^2 / 4

_SYSTEM_BLOCK = "<|im_start|>system\n{system}<|im_end|>\n"
_USER_TURN = "<|im_start|>user\n{query}<|im_end|>\n"
_ASSISTANT_OPEN = "<|im_start|>assistant\n"


def image_tokens(n_tiles: int, tokens_per_tile: int = TOKENS_PER_TILE) -> str:
    """`<img>` + `<IMG_CONTEXT>` x (tokens_per_tile * n_tiles) + `</img>`."""
    if n_tiles < 1 or tokens_per_tile < 1:
        raise ValueError(f"need at least one tile and one token per tile, got {n_tiles} tiles x {tokens_per_tile}")
    return IMAGE_START_TOKEN + IMAGE_CONTEXT_TOKEN * (tokens_per_tile * n_tiles) + IMAGE_END_TOKEN


def with_answer_suffix(question: str, answer_suffix: str = "") -> str:
    """The question as asked: `answer_suffix` appended after one space (none when it starts with whitespace)."""
    if not answer_suffix:
        return question
    separator = "" if answer_suffix[0].isspace() else " "
    return question + separator + answer_suffix


def build_prompt(
    question: str,
    n_tiles: int,
    tokens_per_tile: int = TOKENS_PER_TILE,
    system_message: str = DEFAULT_SYSTEM_MESSAGE,
) -> str:
    """The full prompt string `model.chat` tokenizes for one image of `n_tiles` tiles and one question."""
    query = f"{IMAGE_PLACEHOLDER}\n{question}"
    prompt = _SYSTEM_BLOCK.format(system=system_message) + _USER_TURN.format(query=query) + _ASSISTANT_OPEN
    # Only the first placeholder is the image; a literal "<image>" inside a question stays text, as in model.chat.
    return prompt.replace(IMAGE_PLACEHOLDER, image_tokens(n_tiles, tokens_per_tile), 1)


def answer_context() -> str:
    """The text right before the first answer token (used to resolve how "Yes" is tokenized there)."""
    return _ASSISTANT_OPEN


@dataclass(frozen=True)
class ChatFormat:
    """How one teacher turns (system message, query) into the prompt that ends where the answer starts."""

    template: str
    system_message: str  # the teacher's default; a scorer may pass another
    render: Callable[[str, str], str]  # (system message, query) -> prompt with the assistant turn open
    source: str  # where the template came from, for the sidecar

    def prompt(self, question: str, n_tiles: int, tokens_per_tile: int, system_message: str | None = None) -> str:
        """The full prompt for one image of `n_tiles` tiles and one question (the image tokens in place)."""
        system = self.system_message if system_message is None else system_message
        prompt = self.render(system, f"{IMAGE_PLACEHOLDER}\n{question}")
        return prompt.replace(IMAGE_PLACEHOLDER, image_tokens(n_tiles, tokens_per_tile), 1)

    def answer_context(self, system_message: str | None = None) -> str:
        """The text between the question and the first answer token (resolves how "Yes" is tokenized there)."""
        system = self.system_message if system_message is None else system_message
        marker = "\x00question\x00"
        rendered = self.render(system, marker)
        if rendered.count(marker) != 1:
            raise ValueError(f"template {self.template!r} does not place the question exactly once")
        return rendered.split(marker)[1]


def internvl2_5_format(system_message: str = DEFAULT_SYSTEM_MESSAGE) -> ChatFormat:
    """The "internvl2_5" template reproduced here (native "-hf" checkpoints)."""

    def render(system: str, query: str) -> str:
        return _SYSTEM_BLOCK.format(system=system) + _USER_TURN.format(query=query) + _ASSISTANT_OPEN

    return ChatFormat(TEMPLATE_NAME, system_message, render, "makd (internvl2_5, as the remote code's chat)")


def conversation_format(get_conv_template: Callable[[str], object], template: str, system_message: str) -> ChatFormat:
    """The template named `template` in a checkpoint's own conversation.py, filled as `model.chat` fills it."""
    try:
        get_conv_template(template)
    except KeyError:
        raise ValueError(f"template {template!r} is not defined in the checkpoint's conversation.py") from None

    def render(system: str, query: str) -> str:
        conversation = get_conv_template(template)  # a fresh copy, as chat takes one per call
        conversation.system_message = system
        conversation.append_message(conversation.roles[0], query)
        conversation.append_message(conversation.roles[1], None)
        return conversation.get_prompt()

    return ChatFormat(template, system_message, render, "checkpoint conversation.py")
