"""TESTING / BENCHMARK UTILITY: a tiny random Qwen2-style causal LM with a chat template (no downloads).

The model of stage 2's `--level class --model tiny` (makd.mllm.tiny_teacher), saved where a test or benchmark
asks. Its numbers mean nothing; they let the class-level scoring be checked exactly and timed.
"""

from __future__ import annotations

from pathlib import Path

from makd.mllm.tiny_teacher import CHATML_TEMPLATE, save_tiny_causal_lm

__all__ = ["CHATML_TEMPLATE", "build_tiny_causal_lm"]


def build_tiny_causal_lm(path: str | Path, width: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random Qwen2ForCausalLM (init range 0.2, so answers spread over (0, 1)) and its tokenizer."""
    return save_tiny_causal_lm(path, width, layers, seed)
