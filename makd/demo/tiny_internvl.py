"""TESTING / BENCHMARK UTILITY: tiny random InternVL checkpoints built on the spot (no downloads).

`build_tiny_checkpoint(path, kind=...)` saves a random model and its tokenizer with `save_pretrained`, so the
command loads them back through its real loading path:
- kind "hf": transformers' native InternVL, the model of stage 2's `--model tiny` (makd.mllm.tiny_teacher, where
  the tokenizer and the geometry live);
- kind "remote": the remote-code stand-in of `tiny_remote_code` (loaded with trust_remote_code=True), for tests.
The numbers such a model gives mean nothing; they only let the code be checked exactly and timed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from makd.demo import tiny_remote_code
from makd.mllm.tiny_teacher import TinySpec, save_tiny_internvl, text_config, train_tiny_tokenizer, vision_config

__all__ = ["SAMPLE_QUESTIONS", "TinySpec", "build_tiny_checkpoint", "synthetic_questions", "train_tiny_tokenizer"]

# Seven short yes/no questions of the kind stage 1 writes, the ones the tiny models' checks score.
SAMPLE_QUESTIONS = [
    "Is the object red?",
    "Does it have wings?",
    "Is there water in the background?",
    "Can you see a wheel?",
    "Is it outdoors?",
    "Are the leaves green?",
    "Is the animal furry?",
]


def build_tiny_checkpoint(path: str | Path, kind: str = "hf", spec: TinySpec | None = None) -> Path:
    """Save a tiny random InternVL ("hf" native or "remote" stand-in) and its tokenizer to `path`."""
    spec = spec or TinySpec()
    path = Path(path)
    if kind == "hf":
        return save_tiny_internvl(path, spec)
    if kind != "remote":
        raise ValueError(f"unknown tiny checkpoint kind {kind!r} (use 'hf' or 'remote')")
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(spec.seed)
    _save_remote(path, spec, tokenizer)
    return path


def _save_remote(path: Path, spec: TinySpec, tokenizer) -> None:
    # The architecture name the real configs carry: a transformers class (sdpa) or InternLM2's remote one (eager).
    architecture = "InternLM2ForCausalLM" if spec.legacy_cache else "Qwen2ForCausalLM"
    llm_config = {**text_config(spec, len(tokenizer)), "legacy_cache": spec.legacy_cache}
    llm_config["architectures"] = [architecture]
    config = tiny_remote_code.InternVLChatConfig(vision_config=vision_config(spec), llm_config=llm_config)
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
