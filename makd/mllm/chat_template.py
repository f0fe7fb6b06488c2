"""The InternVL2.5 chat prompt ("internvl2_5" template), the one copy used by every backend.

`model.chat` of InternVL2.5 builds an MPT-style prompt: a system block (always present, even when the system
message is empty), one user turn holding `<image>\\n{question}` and an open assistant turn. The `<image>`
placeholder is then replaced by `<img>` + `<IMG_CONTEXT>` x (tokens per tile x tiles) + `</img>`.
"""

from __future__ import annotations

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
