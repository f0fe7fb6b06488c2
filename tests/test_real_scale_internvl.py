"""The real-geometry stand-ins of tools/gpu_check.py: their size equals the released teachers', building them on the
meta device and materialising in place gives the model ordinary construction gives, and the FLOP count equals what
torch's own counter sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mllm_fixtures import QUESTIONS, random_image
from torch.utils.flop_counter import FlopCounterMode

from makd.demo.real_scale_internvl import (
    GEOMETRIES,
    build_on_device,
    build_on_meta,
    causal_pairs,
    internvl_config,
    language_flops,
    parameter_count,
    scoring_flops,
    vision_flops,
)
from makd.demo.tiny_internvl import train_tiny_tokenizer
from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import native_parts
from makd.mllm.reference import score_per_question


@pytest.mark.parametrize("name", ["internvl2_5-1b", "internvl2_5-8b"])
def test_real_geometries_have_the_released_parameter_counts(name):
    geometry = GEOMETRIES[name]
    model = build_on_meta(geometry, image_token_id=5)  # shapes only: no memory
    count = parameter_count(model)
    assert abs(count - geometry.published_parameters) / geometry.published_parameters < 0.005
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer()


def test_built_in_place_equals_ordinary_construction(tokenizer):
    from transformers import InternVLForConditionalGeneration

    image_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    built = build_on_device(GEOMETRIES["tiny"], image_id, "cpu", torch.float32, seed=3)
    torch.manual_seed(3)
    ordinary = InternVLForConditionalGeneration(internvl_config(GEOMETRIES["tiny"], image_id)).eval()
    # Buffers (the RoPE tables) are what to_empty leaves as garbage: they must be the ones construction computes.
    buffers = dict(ordinary.named_buffers())
    assert buffers and all(torch.equal(value, buffers[name]) for name, value in built.named_buffers())
    state = built.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    norms = [v for k, v in state.items() if k.endswith("norm.weight")]
    assert norms and all(torch.equal(v, torch.ones_like(v)) for v in norms)
    matrices = [v for k, v in state.items() if k.endswith("proj.weight")]
    assert all(0.01 < float(v.std()) < 0.03 for v in matrices)  # N(0, 0.02), transformers' initializer_range
    ordinary.load_state_dict(state)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(built(input_ids=ids).logits, ordinary(input_ids=ids).logits)


def test_in_memory_model_scores_through_the_command_scorer(tokenizer):
    image_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    model = build_on_device(GEOMETRIES["tiny"], image_id, "cpu", torch.float32)
    # larger weights than transformers' 0.02, so that P(yes) spreads out and the comparison means something
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.2)
    parts = native_parts(model, tokenizer)
    assert (parts.tokens_per_tile, parts.device.type, parts.dtype) == (256, "cpu", torch.float32)
    scorer = InternVLScorer(parts, max_tiles=2, batch_size=3)
    image = random_image(896, 448, seed=2)
    pixels = scorer.pixels(scorer.prepare(image))
    expected = score_per_question(parts, scorer.prompt_ids(QUESTIONS, pixels.shape[0]), pixels, scorer.tokens)
    got = scorer.score([image], QUESTIONS)[0]
    assert np.abs(got - expected.numpy()).max() <= 1e-4 and np.std(got) > 0.02


def counted(run) -> int:
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            run()
    return counter.get_total_flops()


@pytest.mark.parametrize("tiles", [1, 3])
def test_flop_count_equals_torchs_counter(tiles):
    """Eager attention, so that every product is a matmul torch's counter sees; it counts the masked half of
    causal attention too, hence the dense pairs P x P for the prefill."""
    model = build_on_device(GEOMETRIES["tiny"], 5, "cpu", torch.float32, attn_implementation="eager")
    config = model.config
    pixels = torch.randn(tiles, 3, 448, 448)
    assert counted(lambda: model.model.get_image_features(pixel_values=pixels)) == vision_flops(config, tiles)
    length = 37
    embeds = torch.randn(1, length, config.text_config.hidden_size)
    decoder = model.model.language_model
    extra = counted(lambda: decoder(inputs_embeds=embeds)) - language_flops(config, length, length * length)
    # Some transformers releases (5.17) build the rotary tables with one [head_dim / 2, 1] @ [1, L] product per
    # forward, which torch's counter sees; the count leaves that out.
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert extra in (0, head_dim * length)


def test_the_three_methods_differ_by_the_work_they_do():
    config = internvl_config(GEOMETRIES["internvl2_5-8b"], 5)
    prefix, suffixes = 3_400, [18, 22, 25, 20, 19]
    this = scoring_flops(config, 13, prefix, suffixes, "this")
    bound = scoring_flops(config, 13, prefix, suffixes, "bound")
    official = scoring_flops(config, 13, prefix, suffixes, "official")
    # The bound also lets each suffix token attend to the suffixes before its own: exactly those pairs more.
    cross_pairs = sum(a * b for i, a in enumerate(suffixes) for b in suffixes[i + 1 :])
    text = config.text_config
    per_pair = 4 * text.num_attention_heads * (text.hidden_size // text.num_attention_heads)
    assert bound - this == text.num_hidden_layers * per_pair * cross_pairs
    # The official approach repeats the image and the prefix once per question.
    vision = vision_flops(config, 13)
    assert official > len(suffixes) * (vision + language_flops(config, prefix, causal_pairs(prefix)))
    assert 4.5 < official / this < len(suffixes)
    # about 2 x 8e9 weights x tokens: the 8B geometry spends ~0.07 PFLOP on one 13-tile image's prefix + suffixes
    assert 5e13 < this < 9e13
    with pytest.raises(ValueError, match="unknown"):
        scoring_flops(config, 1, 10, [3], "fast")
