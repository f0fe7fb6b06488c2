"""Scorer for an InternVL model running in this process (native "-hf" or remote-code checkpoints).

Per image: tile, encode the tiles once, prefill the shared prompt prefix once, then score the questions in
batches of suffixes over the cached prefix (see prefix_scoring for the "packed" and "expanded" modes). The images
of one `score` call that have the same tile count go through the model together, as the batch dimension.
Loader threads (`prepare`) hand over uint8 tiles; normalisation and the cast to the model's dtype run on the device.
Prompts are built from the teacher's chat format (for remote code, the template of the conversation.py it ships),
tokenized exactly as `model.chat` does (`tokenizer(prompt)`, default special tokens) and cached per tile count,
since the prompt text depends on the image only through its number of tiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from makd.mllm.chat_template import with_answer_suffix
from makd.mllm.cost import Cost
from makd.mllm.extraction import ExtractionError
from makd.mllm.model_loading import InternVLParts
from makd.mllm.prefix_scoring import (
    PREFIX_MODES,
    SplitPrompts,
    choose_packed_attention,
    score_images_shared_prefix,
    split_shared_prefix,
    tokens_through_model,
)
from makd.mllm.tiling import TilingSpec, normalize_tiles, tile_tensor
from makd.mllm.yes_no import YesNoTokens, resolve_yes_no_tokens

# The KV cache of one forward holds n_images x prefix tokens: 8,192 tokens are ~1 GB for an 8B teacher
# (InternLM2.5-8B: 32 layers x 8 KV heads x 128 x 2 x 2 bytes per token), i.e. 2 images at 13 tiles, 8 at 1 tile.
PREFIX_TOKEN_BUDGET = 8192
MAX_IMAGES_PER_FORWARD = 8
# Question suffixes per forward when none is asked: packed mode never copies the prefix, so one forward takes a
# typical Q whole (on 2 CPU threads 50 suffixes in one forward took 7 % less time than 16 per forward); expanded
# mode holds one copy of the prefix KV per suffix (16 copies of an 8B teacher's 13-tile prefix are ~7 GB).
DEFAULT_BATCH_SIZE = {"packed": 64, "expanded": 16}


class InternVLScorer:
    """Shared-prefix P(yes) scoring with an in-process InternVL model."""

    def __init__(
        self,
        parts: InternVLParts,
        max_tiles: int = 12,
        batch_size: int | None = None,
        system_message: str | None = None,
        answer_suffix: str = "",
        yes_word: str = "Yes",
        no_word: str = "No",
        prefix_mode: str = "packed",
        images_per_forward: int | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ExtractionError(f"--batch-size must be >= 1, got {batch_size}")
        if images_per_forward is not None and images_per_forward < 1:
            raise ExtractionError(f"images per forward must be >= 1, got {images_per_forward}")
        # None = as many same-tile images as fit PREFIX_TOKEN_BUDGET prefix tokens (at most MAX_IMAGES_PER_FORWARD).
        self.images_per_forward = images_per_forward
        self.parts = parts
        if prefix_mode not in PREFIX_MODES:
            raise ExtractionError(f"--prefix-mode {prefix_mode!r} is unknown (use {', '.join(PREFIX_MODES)})")
        self.prefix_mode = prefix_mode
        self.system_message = parts.chat_format.system_message if system_message is None else system_message
        self.answer_suffix = answer_suffix
        self.tiling = TilingSpec(max_tiles=max_tiles, tile_size=parts.tile_size, mean=parts.mean, std=parts.std)
        answer_context = parts.chat_format.answer_context(self.system_message)
        self.tokens: YesNoTokens = resolve_yes_no_tokens(parts.tokenizer, answer_context, yes_word, no_word)
        self.packed_attention: str | None = None
        if prefix_mode == "packed":
            context = parts.tokenizer(self.prompt("Is it?", 1))["input_ids"]
            context = [t for t in context if t != parts.image_context_id]
            self.packed_attention = choose_packed_attention(parts, self.tokens, context)
            if self.packed_attention is None:
                warnings.warn(
                    "this language model ignores custom attention masks; using --prefix-mode expanded", stacklevel=2
                )
                self.prefix_mode = "expanded"
        self.batch_size = DEFAULT_BATCH_SIZE[self.prefix_mode] if batch_size is None else batch_size
        self._split_cache: dict[tuple[int, tuple[str, ...]], SplitPrompts] = {}
        self.cost = Cost()

    def prompt(self, question: str, n_tiles: int) -> str:
        """The exact prompt string for one question about an image of `n_tiles` tiles."""
        asked = with_answer_suffix(question, self.answer_suffix)
        return self.parts.chat_format.prompt(asked, n_tiles, self.parts.tokens_per_tile, self.system_message)

    def prompt_ids(self, questions: Sequence[str], n_tiles: int) -> list[list[int]]:
        """Token ids of every question's full prompt, tokenized as model.chat does."""
        return [list(self.parts.tokenizer(self.prompt(q, n_tiles))["input_ids"]) for q in questions]

    def split(self, questions: Sequence[str], n_tiles: int) -> SplitPrompts:
        key = (n_tiles, tuple(questions))
        if key not in self._split_cache:
            self._split_cache[key] = split_shared_prefix(self.prompt_ids(questions, n_tiles))
        return self._split_cache[key]

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """Tiles, uint8 [n_tiles, 3, tile, tile] (CPU; thread-safe)."""
        return tile_tensor(image, self.tiling)

    def pixels(self, tiles: torch.Tensor) -> torch.Tensor:
        """Model input on the device in its dtype from `prepare` output (uint8) or normalised float tiles."""
        tiles = tiles.to(self.parts.device, non_blocking=True)
        if tiles.dtype == torch.uint8:
            return normalize_tiles(tiles, self.tiling, self.parts.dtype)
        return tiles.to(self.parts.dtype)

    @torch.inference_mode()
    def score(self, images: Sequence[Any], questions: Sequence[str]) -> np.ndarray:
        """P(yes), float64 [len(images), Q]; `images` are PIL images or `prepare` results (or float tiles).

        Images with the same tile count are scored together (one vision pass over all their tiles, one batch
        of prefix and suffix forwards), at most `images_per_forward` at a time (by default as many as fit
        PREFIX_TOKEN_BUDGET prefix tokens).
        """
        prepared = [self.prepare(item) if isinstance(item, Image.Image) else item for item in images]
        result = np.full((len(prepared), len(questions)), np.nan, dtype=np.float64)
        groups: dict[int, list[int]] = {}
        for index, tiles in enumerate(prepared):
            groups.setdefault(int(tiles.shape[0]), []).append(index)
        for n_tiles, members in groups.items():
            split = self.split(questions, n_tiles)
            per_forward = self.images_per_forward or min(
                MAX_IMAGES_PER_FORWARD, max(1, PREFIX_TOKEN_BUDGET // len(split.prefix))
            )
            for start in range(0, len(members), per_forward):
                batch = members[start : start + per_forward]
                pixels = [self.pixels(prepared[i]) for i in batch]
                # [len(batch) * n_tiles, 3, S, S]; one image is not copied (13 float tiles are 31 MB)
                pixels = pixels[0] if len(pixels) == 1 else torch.cat(pixels)
                features = self.parts.encode_images(pixels)  # [len(batch) * n_tiles, T, hidden]
                features = features.reshape(len(batch), n_tiles, *features.shape[1:])
                scores = score_images_shared_prefix(
                    self.parts, split, features, self.tokens, self.batch_size, self.prefix_mode,
                    self.packed_attention or "mask",
                )  # fmt: skip
                result[batch] = scores.numpy()
                self._count(split, len(batch))
        return result

    def _count(self, split: SplitPrompts, n_images: int) -> None:
        """Cost of `n_images` images: Q prompts each, every prompt's full length, the prefix counted once."""
        self.cost.prompts += n_images * len(split.suffixes)
        self.cost.prompt_tokens += n_images * sum(len(split.prefix) + len(s) for s in split.suffixes)
        self.cost.tokens_processed += n_images * tokens_through_model(split, self.batch_size, self.prefix_mode)

    def describe(self) -> dict:
        return {
            **self.parts.info,
            "template": self.parts.chat_format.template,
            "template_source": self.parts.chat_format.source,
            "system_message": self.system_message,
            "answer_suffix": self.answer_suffix,
            "yes_no_tokens": self.tokens.describe(),
            "tokens_per_tile": self.parts.tokens_per_tile,
            "image_context_token_id": self.parts.image_context_id,
            "tiling": self.tiling.describe(),
            "batch_size": self.batch_size,
            "images_per_forward": self.images_per_forward or f"auto ({PREFIX_TOKEN_BUDGET} prefix tokens)",
            "prefix_mode": self.prefix_mode,
            **({"packed_attention": self.packed_attention} if self.prefix_mode == "packed" else {}),
            "scoring": "shared prefix KV cache, last position only",
        }
