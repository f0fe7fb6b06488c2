"""TESTING / BENCHMARK UTILITY: tiny random InternVL checkpoints built on the spot (no downloads).

`build_tiny_checkpoint(path, kind=...)` trains a byte-level BPE tokenizer with `tokenizers` (holding Yes, No
and the InternVL special tokens), builds a random model from a config and saves both with `save_pretrained`,
so the command loads them back through its real loading path:
- kind "hf": transformers' native InternVLForConditionalGeneration + InternVLProcessor;
- kind "remote": the remote-code stand-in of `tiny_remote_code` (loaded with trust_remote_code=True).
The numbers such a model gives mean nothing; they only let the code be checked exactly and timed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from makd.demo import tiny_remote_code
from makd.mllm.chat_template import DEFAULT_SYSTEM_MESSAGE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
NAMED_IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
_CORPUS = [
    "system\nuser\nassistant\n",
    DEFAULT_SYSTEM_MESSAGE,
    "Yes No Yes No Yes No",
    "Is the object red? Does it have wings? Is there water in the background? Can you see a wheel?",
    "Are the leaves green? Is the animal furry? Does the image show a striped pattern? Is it outdoors?",
    "The answer must always be either Yes or No (do not provide any other response).",
]


@dataclass(frozen=True)
class TinySpec:
    """Geometry of a tiny InternVL. Tokens per tile = (448 / patch)^2 / 4, so 256 needs patch 14."""

    tokens_per_tile: int = 16
    vision_width: int = 32
    vision_layers: int = 1
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    init_range: float = 0.2  # larger than usual so random P(yes) spread over (0, 1), which makes checks bite
    seed: int = 0
    legacy_cache: bool = False  # remote stand-in only: InternLM2's decoder interface (tiny_remote_code)

    @property
    def patch_size(self) -> int:
        side = int(round((4 * self.tokens_per_tile) ** 0.5))
        if side * side != 4 * self.tokens_per_tile or 448 % side:
            raise ValueError(f"tokens_per_tile {self.tokens_per_tile} does not give a square grid dividing 448")
        return 448 // side


def train_tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer wrapped for transformers, with single-token "Yes" and "No"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_IMAGE_TOKENS),
    )


def _vision_config(spec: TinySpec) -> dict:
    return {
        "hidden_size": spec.vision_width,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * spec.vision_width,
        "image_size": 448,
        "patch_size": spec.patch_size,
        "initializer_range": spec.init_range,
    }


def _text_config(spec: TinySpec, vocab_size: int) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": spec.text_width,
        "intermediate_size": 2 * spec.text_width,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": 16384,
        "initializer_range": spec.init_range,
        "tie_word_embeddings": False,
    }


def build_tiny_checkpoint(path: str | Path, kind: str = "hf", spec: TinySpec | None = None) -> Path:
    """Save a tiny random InternVL ("hf" native or "remote" stand-in) and its tokenizer to `path`."""
    spec = spec or TinySpec()
    path = Path(path)
    tokenizer = train_tiny_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    torch.manual_seed(spec.seed)
    if kind == "hf":
        _save_native(path, spec, tokenizer, image_token_id)
    elif kind == "remote":
        _save_remote(path, spec, tokenizer)
    else:
        raise ValueError(f"unknown tiny checkpoint kind {kind!r} (use 'hf' or 'remote')")
    return path


def _save_native(path: Path, spec: TinySpec, tokenizer, image_token_id: int) -> None:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    config = InternVLConfig(
        vision_config=_vision_config(spec),
        text_config={"model_type": "qwen2", **_text_config(spec, len(tokenizer))},
        image_token_id=image_token_id,
        image_seq_length=spec.tokens_per_tile,
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config).eval()
    image_processor = GotOcr2ImageProcessor(
        size={"height": 448, "width": 448},
        crop_to_patches=True,
        max_patches=12,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(),
        image_seq_length=spec.tokens_per_tile,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _save_remote(path: Path, spec: TinySpec, tokenizer) -> None:
    # The architecture name the real configs carry: a transformers class (sdpa) or InternLM2's remote one (eager).
    architecture = "InternLM2ForCausalLM" if spec.legacy_cache else "Qwen2ForCausalLM"
    llm_config = {**_text_config(spec, len(tokenizer)), "legacy_cache": spec.legacy_cache}
    llm_config["architectures"] = [architecture]
    config = tiny_remote_code.InternVLChatConfig(vision_config=_vision_config(spec), llm_config=llm_config)
    model = tiny_remote_code.InternVLChatModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # Make the folder a remote-code checkpoint: the modeling file beside the weights, named in auto_map.
    shutil.copyfile(tiny_remote_code.__file__, path / "modeling_internvl_chat.py")
    config_path = path / "config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    saved["auto_map"] = {
        "AutoConfig": "modeling_internvl_chat.InternVLChatConfig",
        "AutoModel": "modeling_internvl_chat.InternVLChatModel",
    }
    saved["architectures"] = ["InternVLChatModel"]
    config_path.write_text(json.dumps(saved, indent=2), encoding="utf-8")


_WORDS = (
    "red green blue striped spotted furry metallic wooden glossy curved pointed round long short small large "
    "wing wheel leaf petal beak tail window roof fin stem handle water grass sky road snow sand background "
    "object animal bird flower car plane texture pattern surface edge shadow color shape"
).split()
_STARTS = ("Is", "Does", "Are", "Can", "Has")


def synthetic_questions(tokenizer, count: int, min_tokens: int = 20, max_tokens: int = 30, seed: int = 0) -> list[str]:
    """`count` distinct yes/no questions whose text is `min_tokens`..`max_tokens` tokens in `tokenizer`."""
    import random

    rng = random.Random(seed)
    questions: list[str] = []
    while len(questions) < count:
        words = [rng.choice(_STARTS), "the"]
        text = ""
        while True:
            words.append(rng.choice(_WORDS))
            text = " ".join(words) + "?"
            length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if length >= min_tokens:
                break
        if length <= max_tokens and text not in questions:
            questions.append(text)
    return questions
