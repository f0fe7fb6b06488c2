"""Scorer for an InternVL model running in this process (native "-hf" or remote-code checkpoints).

Per image: tile, encode the tiles once, prefill the shared prompt prefix once, then score the questions in
batches of suffixes over the cached prefix (see prefix_scoring for the "packed" and "expanded" modes).
Prompts are tokenized exactly as `model.chat` does (`tokenizer(prompt)`, default special tokens) and cached
per tile count, since the prompt text depends on the image only through its number of tiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from makd.mllm.chat_template import TEMPLATE_NAME, answer_context, build_prompt, with_answer_suffix
from makd.mllm.extraction import ExtractionError
from makd.mllm.model_loading import InternVLParts
from makd.mllm.prefix_scoring import (
    PREFIX_MODES,
    SplitPrompts,
    packed_mode_agrees,
    score_shared_prefix,
    split_shared_prefix,
)
from makd.mllm.tiling import TilingSpec, pixel_values
from makd.mllm.yes_no import YesNoTokens, resolve_yes_no_tokens


class InternVLScorer:
    """Shared-prefix P(yes) scoring with an in-process InternVL model."""

    def __init__(
        self,
        parts: InternVLParts,
        max_tiles: int = 12,
        batch_size: int = 16,
        system_message: str | None = None,
        answer_suffix: str = "",
        yes_word: str = "Yes",
        no_word: str = "No",
        prefix_mode: str = "packed",
    ) -> None:
        if batch_size < 1:
            raise ExtractionError(f"--batch-size must be >= 1, got {batch_size}")
        self.parts = parts
        self.batch_size = batch_size
        if prefix_mode not in PREFIX_MODES:
            raise ExtractionError(f"--prefix-mode {prefix_mode!r} is unknown (use {', '.join(PREFIX_MODES)})")
        self.prefix_mode = prefix_mode
        self.system_message = parts.system_message if system_message is None else system_message
        self.answer_suffix = answer_suffix
        self.tiling = TilingSpec(max_tiles=max_tiles, tile_size=parts.tile_size, mean=parts.mean, std=parts.std)
        self.tokens: YesNoTokens = resolve_yes_no_tokens(parts.tokenizer, answer_context(), yes_word, no_word)
        if prefix_mode == "packed":
            context = parts.tokenizer(build_prompt("Is it?", 1, 1, self.system_message))["input_ids"]
            if not packed_mode_agrees(parts, self.tokens, [t for t in context if t != parts.image_context_id]):
                warnings.warn(
                    "this language model ignores custom attention masks; using --prefix-mode expanded", stacklevel=2
                )
                self.prefix_mode = "expanded"
        self._split_cache: dict[tuple[int, tuple[str, ...]], SplitPrompts] = {}

    def prompt(self, question: str, n_tiles: int) -> str:
        """The exact prompt string for one question about an image of `n_tiles` tiles."""
        asked = with_answer_suffix(question, self.answer_suffix)
        return build_prompt(asked, n_tiles, self.parts.tokens_per_tile, self.system_message)

    def prompt_ids(self, questions: Sequence[str], n_tiles: int) -> list[list[int]]:
        """Token ids of every question's full prompt, tokenized as model.chat does."""
        return [list(self.parts.tokenizer(self.prompt(q, n_tiles))["input_ids"]) for q in questions]

    def split(self, questions: Sequence[str], n_tiles: int) -> SplitPrompts:
        key = (n_tiles, tuple(questions))
        if key not in self._split_cache:
            self._split_cache[key] = split_shared_prefix(self.prompt_ids(questions, n_tiles))
        return self._split_cache[key]

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """Normalised tiles, float32 [n_tiles, 3, tile, tile] (CPU)."""
        return pixel_values(image, self.tiling)

    @torch.inference_mode()
    def score(self, images: Sequence[Any], questions: Sequence[str]) -> np.ndarray:
        """P(yes), float64 [len(images), Q]; `images` are PIL images or `prepare` results."""
        rows = []
        for item in images:
            pixels = self.prepare(item) if isinstance(item, Image.Image) else item
            features = self.parts.encode_images(pixels.to(self.parts.device, self.parts.dtype))
            split = self.split(questions, int(pixels.shape[0]))
            scores = score_shared_prefix(self.parts, split, features, self.tokens, self.batch_size, self.prefix_mode)
            rows.append(scores.numpy())
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(questions))

    def describe(self) -> dict:
        return {
            **self.parts.info,
            "template": TEMPLATE_NAME,
            "system_message": self.system_message,
            "answer_suffix": self.answer_suffix,
            "yes_no_tokens": self.tokens.describe(),
            "tokens_per_tile": self.parts.tokens_per_tile,
            "image_context_token_id": self.parts.image_context_id,
            "tiling": self.tiling.describe(),
            "batch_size": self.batch_size,
            "prefix_mode": self.prefix_mode,
            "scoring": "shared prefix KV cache, last position only",
        }
