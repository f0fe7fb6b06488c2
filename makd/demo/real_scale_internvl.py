"""BENCHMARK UTILITY: InternVL models of the paper's teachers' real geometry with random weights, built in place on
a device, and the floating-point operations scoring an image with them costs.

No checkpoint is read (nothing is downloaded): the shapes are those of the released models, so time, memory and
FLOPs are the real teachers', while the answers mean nothing. The model is transformers' own
InternVLForConditionalGeneration, constructed on the meta device (no memory, no initialisation), materialised on
the target device (`to_empty`) and initialised there by transformers' own `initialize_weights`, which also
recomputes the non-persistent buffers `to_empty` leaves as garbage (the RoPE tables). An 8B model so costs seconds
on a GPU, not the minutes of building it on the CPU and copying it over.

Geometries (sizes from the released configs):
- "internvl2_5-1b": InternViT-300M-448px-V2_5 (24 layers, width 1024, 16 heads, MLP 4096) + Qwen2.5-0.5B (24 layers,
  width 896, 14 heads, 2 KV heads, MLP 4864, vocabulary 151,674, untied head): 938M parameters as released.
- "internvl2_5-8b": InternViT-300M + InternLM2.5-7B (32 layers, width 4096, 32 heads, 8 KV heads, MLP 14336,
  vocabulary 92,553, untied head), here as transformers' Llama, which has InternLM2's structure (RMSNorm, SwiGLU,
  RoPE, grouped-query attention, no biases): 8.08B parameters as released.
- "tiny": the same tile geometry (448-px tiles, patch 14, 256 tokens per tile) with tiny widths, for --smoke runs.

FLOPs (`scoring_flops`) count the multiply-adds of matrix products as 2 operations each, from the shapes: every
linear layer (2 x inputs x outputs per token), the patch embedding, and attention as 4 x head size x heads per
(query, key) pair (scores and weighted sum). A method is credited only with the pairs it needs (causal: a token
sees itself and what comes before it), not with what a kernel computes and masks away. Norms, activations,
softmax and embedding lookups are left out (a few percent at these sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Geometry:
    """Shapes of an InternVL model: a ViT over 448-px tiles, a pixel-shuffle projector, a decoder-only LM."""

    vision_layers: int
    vision_width: int
    vision_heads: int
    vision_mlp: int
    text_architecture: str  # transformers model_type of the language model ("qwen2", "llama")
    text_layers: int
    text_width: int
    text_heads: int
    text_kv_heads: int
    text_mlp: int
    vocab_size: int
    vision_qkv_bias: bool = True
    published_parameters: int | None = None  # the released model's count, to check the geometry against


INTERNVIT_300M = {"vision_layers": 24, "vision_width": 1024, "vision_heads": 16, "vision_mlp": 4096}
GEOMETRIES = {
    "internvl2_5-1b": Geometry(
        **INTERNVIT_300M, text_architecture="qwen2", text_layers=24, text_width=896, text_heads=14, text_kv_heads=2,
        text_mlp=4864, vocab_size=151_674, published_parameters=938_000_000,
    ),
    "internvl2_5-8b": Geometry(
        **INTERNVIT_300M, text_architecture="llama", text_layers=32, text_width=4096, text_heads=32, text_kv_heads=8,
        text_mlp=14_336, vocab_size=92_553, published_parameters=8_080_000_000,
    ),
    "tiny": Geometry(
        vision_layers=1, vision_width=32, vision_heads=2, vision_mlp=64, text_architecture="qwen2", text_layers=2,
        text_width=64, text_heads=4, text_kv_heads=2, text_mlp=128, vocab_size=512,
    ),
}  # fmt: skip
TILE_SIZE, PATCH_SIZE, DOWNSAMPLE_RATIO = 448, 14, 0.5


def internvl_config(geometry: Geometry, image_token_id: int, attn_implementation: str | None = None) -> Any:
    """transformers InternVLConfig of `geometry` (`attn_implementation` None = transformers' default, sdpa)."""
    from transformers import InternVLConfig

    vision = {
        "hidden_size": geometry.vision_width,
        "num_hidden_layers": geometry.vision_layers,
        "num_attention_heads": geometry.vision_heads,
        "intermediate_size": geometry.vision_mlp,
        "attention_bias": geometry.vision_qkv_bias,
        "image_size": TILE_SIZE,
        "patch_size": PATCH_SIZE,
    }
    text = {
        "model_type": geometry.text_architecture,
        "vocab_size": geometry.vocab_size,
        "hidden_size": geometry.text_width,
        "intermediate_size": geometry.text_mlp,
        "num_hidden_layers": geometry.text_layers,
        "num_attention_heads": geometry.text_heads,
        "num_key_value_heads": geometry.text_kv_heads,
        "max_position_embeddings": 32_768,
        "rope_theta": 1_000_000.0,
        "tie_word_embeddings": False,
    }
    tokens_per_tile = int((TILE_SIZE // PATCH_SIZE) ** 2 * DOWNSAMPLE_RATIO**2)
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        image_seq_length=tokens_per_tile,
        downsample_ratio=DOWNSAMPLE_RATIO,
        tie_word_embeddings=False,
    )
    if attn_implementation is not None:
        for sub in (config, config.vision_config, config.text_config):
            sub._attn_implementation = attn_implementation
    return config


def build_on_meta(geometry: Geometry, image_token_id: int = 0, dtype: torch.dtype = torch.float32, **config) -> Any:
    """The model on the meta device: its structure and parameter shapes, no memory."""
    from transformers import InternVLForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters in `dtype`; RoPE tables are float32 by their own code
    try:
        with torch.device("meta"):
            return InternVLForConditionalGeneration(internvl_config(geometry, image_token_id, **config))
    finally:
        torch.set_default_dtype(previous)


def build_on_device(
    geometry: Geometry, image_token_id: int, device: torch.device | str, dtype: torch.dtype, seed: int = 0, **config
) -> Any:
    """The model with random weights, materialised and initialised on `device` in `dtype`, in eval mode."""
    model = build_on_meta(geometry, image_token_id, dtype, **config)
    model.to_empty(device=device)
    torch.manual_seed(seed)
    model.initialize_weights()  # N(0, initializer_range) matrices, unit norms, and the RoPE tables recomputed
    return model.eval()


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- FLOPs ------------------------------------------------------------------------------------------------------


def vision_flops(config: Any, n_tiles: int) -> int:
    """Encoding `n_tiles` tiles: patch embedding, ViT layers over patches + CLS (attention over all pairs), the
    pixel-shuffle projector into the language model's width."""
    vision, text = config.vision_config, config.text_config
    width, mlp, layers = vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers
    patch = vision.patch_size[0]
    patches = (vision.image_size[0] // patch) * (vision.image_size[1] // patch)
    tokens = patches + 1  # + CLS
    embedding = 2 * patches * 3 * patch * patch * width
    linear = 2 * tokens * (4 * width * width + 2 * width * mlp)  # qkv + output projection, MLP
    attention = 4 * tokens * tokens * width
    shuffled = int(round(patches * config.downsample_ratio**2))
    merged = int(round(width / config.downsample_ratio**2))
    projector = 2 * shuffled * (merged * text.hidden_size + text.hidden_size * text.hidden_size)
    return n_tiles * (embedding + layers * (linear + attention) + projector)


def language_flops(config: Any, tokens: int, pairs: int) -> int:
    """`tokens` tokens through the language model's layers (no head), attention over `pairs` (query, key) pairs."""
    text = config.text_config
    width, heads, kv_heads = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or width // heads
    query_out = heads * head_dim  # query and output projections; keys and values have kv_heads heads
    per_token = 2 * (2 * width * query_out + 2 * width * kv_heads * head_dim + 3 * width * text.intermediate_size)
    per_pair = 4 * heads * head_dim
    layers = text.num_hidden_layers
    return layers * (tokens * per_token + pairs * per_pair)


def causal_pairs(length: int) -> int:
    return length * (length + 1) // 2


SCORING_METHODS = ("this", "official", "bound")


def scoring_flops(config: Any, n_tiles: int, prefix_length: int, suffix_lengths: list[int], method: str) -> int:
    """FLOPs of scoring one image's Q questions (a shared prefix of `prefix_length` tokens, then the suffixes):
    - "this": encode once, prefill the prefix, each suffix token attends to the prefix and its own suffix, the two
      answer rows of the head per question (this implementation, prefix_scoring);
    - "official": per question, encode the image and run the whole prompt, the full head at its last position;
    - "bound": encode once, one causal pass over the prefix and all suffixes end to end, two head rows each.
    """
    text = config.text_config
    vision = vision_flops(config, n_tiles)
    two_rows = 2 * text.hidden_size * 2
    q = len(suffix_lengths)
    if method == "this":
        suffix_pairs = sum(s * prefix_length + causal_pairs(s) for s in suffix_lengths)
        prefix = language_flops(config, prefix_length, causal_pairs(prefix_length))
        return vision + prefix + language_flops(config, sum(suffix_lengths), suffix_pairs) + q * two_rows
    if method == "official":
        head = 2 * text.hidden_size * text.vocab_size
        return sum(vision + language_flops(config, prefix_length + s, causal_pairs(prefix_length + s)) + head
                   for s in suffix_lengths)  # fmt: skip
    if method == "bound":
        length = prefix_length + sum(suffix_lengths)
        return vision + language_flops(config, length, causal_pairs(length)) + q * two_rows
    raise ValueError(f"scoring method {method!r} is unknown (use {', '.join(SCORING_METHODS)})")
