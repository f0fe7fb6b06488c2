"""The InternVL2.5 prompt is reproduced character for character, image tokens included."""

from __future__ import annotations

import pytest

from makd.commands.stage2 import PAPER_ANSWER_SUFFIX
from makd.demo.tiny_internvl import train_tiny_tokenizer
from makd.mllm.chat_template import (
    DEFAULT_SYSTEM_MESSAGE,
    answer_context,
    build_prompt,
    image_tokens,
    with_answer_suffix,
)

# Written out by hand from InternVL's internvl2_5 template (its conversation.py), not built with the code under test.
SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def test_prompt_matches_reference_character_for_character():
    expected = (
        "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
        "<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * (256 * 13) + "</img>\nIs the bird red?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert DEFAULT_SYSTEM_MESSAGE == SYSTEM
    assert build_prompt("Is the bird red?", n_tiles=13) == expected
    assert build_prompt("Is the bird red?", 13).count("<IMG_CONTEXT>") == 3328  # REFERENCE: 500x375 -> 3,328


def test_prompt_with_other_system_message_and_tile_geometry():
    prompt = build_prompt("Q?", n_tiles=2, tokens_per_tile=4, system_message="")
    assert prompt == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * 8 + "</img>\nQ?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt.endswith(answer_context())


def test_literal_image_placeholder_in_question_stays_text():
    prompt = build_prompt("Is <image> a word here?", 1, tokens_per_tile=2)
    assert "Is <image> a word here?" in prompt and prompt.count("<IMG_CONTEXT>") == 2


def test_answer_suffix_joins_with_one_space():
    assert with_answer_suffix("Is it red?", "") == "Is it red?"
    assert with_answer_suffix("Is it red?", PAPER_ANSWER_SUFFIX) == (
        "Is it red? The answer must always be either Yes or No (do not provide any other response)."
    )
    assert with_answer_suffix("Is it red?", "\nAnswer Yes or No.") == "Is it red?\nAnswer Yes or No."


def test_image_tokens_count_and_bad_input():
    assert image_tokens(3, 256) == "<img>" + "<IMG_CONTEXT>" * 768 + "</img>"
    with pytest.raises(ValueError, match="at least one tile"):
        image_tokens(0)


def test_tokenized_prompt_holds_one_id_per_image_token():
    tokenizer = train_tiny_tokenizer()
    ids = tokenizer(build_prompt("Is the object red?", n_tiles=5, tokens_per_tile=16))["input_ids"]
    context = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    start, end = tokenizer.convert_tokens_to_ids("<img>"), tokenizer.convert_tokens_to_ids("</img>")
    assert ids.count(context) == 80
    first = ids.index(context)
    assert ids[first - 1] == start and ids[first + 80] == end and ids[first : first + 80] == [context] * 80
