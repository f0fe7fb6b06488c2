"""The "Yes" and "No" answer tokens of the tokenizer in use, and P(yes) from their logits or log-probabilities.

Token ids differ between vocabularies (Qwen2 "Yes" = 9454; InternLM2 has another id), so they are resolved
from the tokenizer, never hard-coded. A wrong id would fail silently: the scores of some unrelated token would
become the targets. Hence the checks: each word must be exactly one token where the answer starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from makd.errors import MakdError


class AnswerTokenError(MakdError, ValueError):
    """The tokenizer cannot represent the Yes or No answer as one token."""


@dataclass(frozen=True)
class YesNoTokens:
    """The strings and ids of the two answer tokens."""

    yes: str
    no: str
    yes_id: int
    no_id: int

    def describe(self) -> dict:
        return {"yes": self.yes, "no": self.no, "yes_id": self.yes_id, "no_id": self.no_id}


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def resolve_answer_token(tokenizer: Any, word: str, context: str) -> int:
    """Id of `word` as the first token after `context` (e.g. "<|im_start|>assistant\\n").

    Tokenizing the word after its real context matters: SentencePiece tokenizers (InternLM2) give a bare
    "Yes" a "▁" prefix at the start of a text, but not after a newline, where the answer actually starts.
    """
    before = _encode(tokenizer, context)
    after = _encode(tokenizer, context + word)
    if after[: len(before)] != before:
        raise AnswerTokenError(
            f"answer word {word!r} merges with the prompt's last token in this tokenizer; "
            f"pass another answer word (e.g. --yes-word/--no-word)"
        )
    extra = after[len(before) :]
    if len(extra) != 1:
        pieces = tokenizer.convert_ids_to_tokens(extra) if extra else []
        raise AnswerTokenError(
            f"answer word {word!r} is {len(extra)} tokens {pieces} in this tokenizer, not one; "
            f"P(yes) needs single-token answers (use a tokenizer whose vocabulary holds {word!r})"
        )
    token_id = int(extra[0])
    if tokenizer.decode([token_id]).strip() != word:
        raise AnswerTokenError(f"answer word {word!r} resolves to id {token_id} which decodes to something else")
    return token_id


def resolve_yes_no_tokens(tokenizer: Any, context: str, yes: str = "Yes", no: str = "No") -> YesNoTokens:
    """Both answer tokens, checked to be single and distinct."""
    yes_id = resolve_answer_token(tokenizer, yes, context)
    no_id = resolve_answer_token(tokenizer, no, context)
    if yes_id == no_id:
        raise AnswerTokenError(f"answer words {yes!r} and {no!r} resolve to the same token id {yes_id}")
    return YesNoTokens(yes=yes, no=no, yes_id=yes_id, no_id=no_id)


def p_yes_from_logits(logits: torch.Tensor, tokens: YesNoTokens) -> torch.Tensor:
    """softmax([logit_yes, logit_no])[0] in float32; `logits` [..., vocab] -> [...]."""
    pair = torch.stack([logits[..., tokens.yes_id], logits[..., tokens.no_id]], dim=-1).float()
    return torch.softmax(pair, dim=-1)[..., 0]


@dataclass(frozen=True)
class LogprobAnswer:
    """P(yes) read from a server's top log-probabilities; `one_sided` when only one of the two was listed."""

    p_yes: float | None
    one_sided: bool = False


def p_yes_from_top_logprobs(top: Mapping[str, float], yes_word: str = "Yes", no_word: str = "No") -> LogprobAnswer:
    """P(yes) renormalised over the Yes and No log-probabilities of the first answer position.

    `top` maps token strings to log-probabilities (the server's top_logprobs); the words must match exactly.
    When neither answer is listed the answer is None: nothing is invented. When only one is listed, the
    missing one is at most the smallest listed log-probability; that bound is used (the least extreme value
    the server's reply allows).
    """
    yes, no = top.get(yes_word), top.get(no_word)
    if yes is None and no is None:
        return LogprobAnswer(None)
    one_sided = yes is None or no is None
    if one_sided:
        floor = min(top.values())
        yes = floor if yes is None else yes
        no = floor if no is None else no
    return LogprobAnswer(_sigmoid(yes - no), one_sided)


def _sigmoid(x: float) -> float:
    # softmax over two log-probabilities = sigmoid of their difference; this form never overflows
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
