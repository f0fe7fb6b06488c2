"""Yes/No token resolution from the tokenizer in use, and P(yes) from logits or server log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from makd.demo.tiny_internvl import train_tiny_tokenizer
from makd.mllm.chat_template import answer_context
from makd.mllm.yes_no import (
    AnswerTokenError,
    YesNoTokens,
    p_yes_from_logits,
    p_yes_from_top_logprobs,
    resolve_yes_no_tokens,
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer()


def test_resolves_single_token_ids_from_the_tokenizer(tokenizer):
    tokens = resolve_yes_no_tokens(tokenizer, answer_context())
    assert tokens.yes_id == tokenizer.convert_tokens_to_ids("Yes")
    assert tokens.no_id == tokenizer.convert_tokens_to_ids("No")
    assert tokenizer.decode([tokens.yes_id]) == "Yes" and tokenizer.decode([tokens.no_id]) == "No"
    assert tokens.describe() == {"yes": "Yes", "no": "No", "yes_id": tokens.yes_id, "no_id": tokens.no_id}


def test_multi_token_answer_word_stops_with_clear_error(tokenizer):
    with pytest.raises(AnswerTokenError, match=r"answer word 'Xylophone' is \d+ tokens .* not one"):
        resolve_yes_no_tokens(tokenizer, answer_context(), yes="Xylophone")


def test_identical_words_are_refused(tokenizer):
    with pytest.raises(AnswerTokenError, match="same token id"):
        resolve_yes_no_tokens(tokenizer, answer_context(), yes="Yes", no="Yes")


def test_p_yes_is_two_way_softmax_of_the_two_logits():
    tokens = YesNoTokens("Yes", "No", yes_id=2, no_id=5)
    logits = torch.zeros(3, 8)
    logits[0, 2], logits[0, 5] = 1.0, -1.0
    logits[1, 2], logits[1, 5] = 0.5, 0.5
    logits[2, 2], logits[2, 5] = -100.0, 100.0
    logits[:, 0] = 50.0  # other tokens do not matter
    p = p_yes_from_logits(logits, tokens)
    torch.testing.assert_close(p, torch.tensor([1 / (1 + math.exp(-2.0)), 0.5, 0.0]))


def test_top_logprobs_renormalised_over_yes_and_no():
    answer = p_yes_from_top_logprobs({"Yes": math.log(0.6), "No": math.log(0.2), "Maybe": math.log(0.1)})
    assert answer.p_yes == pytest.approx(0.75) and not answer.one_sided


def test_top_logprobs_neither_listed_gives_no_answer():
    answer = p_yes_from_top_logprobs({"Maybe": -0.1, "yes": -2.0, " No": -3.0})
    assert answer.p_yes is None


def test_top_logprobs_one_sided_uses_the_smallest_listed_value_as_bound():
    answer = p_yes_from_top_logprobs({"Yes": -0.01, "Maybe": -5.0, "The": -7.0})
    assert answer.one_sided
    assert answer.p_yes == pytest.approx(1 / (1 + math.exp(-7.0 + 0.01)))
    assert p_yes_from_top_logprobs({"No": -0.01, "The": -7.0}).p_yes == pytest.approx(1 / (1 + math.exp(7.0 - 0.01)))


def test_extreme_logprobs_do_not_overflow():
    assert p_yes_from_top_logprobs({"Yes": -9999.0, "No": 0.0}).p_yes == 0.0
    assert p_yes_from_top_logprobs({"Yes": 0.0, "No": -9999.0}).p_yes == 1.0
