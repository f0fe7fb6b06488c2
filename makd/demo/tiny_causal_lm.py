"""TESTING / BENCHMARK UTILITY: a tiny random Qwen2-style causal LM with a chat template (no downloads).

The tokenizer is tiny.py's byte-level BPE (single-token Yes / No); the chat template is Qwen2's ChatML shape.
Saved with save_pretrained, so the class-level command loads it through AutoModelForCausalLM / AutoTokenizer.
Its numbers mean nothing; they let the class-level scoring be checked exactly and timed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from makd.demo.tiny_internvl import train_tiny_tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_causal_lm(path: str | Path, width: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random Qwen2ForCausalLM (init range 0.2, so answers spread over (0, 1)) and its tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
