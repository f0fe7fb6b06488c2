"""Shared-prefix scoring equals one full forward per question, on both model kinds, loaded from disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mllm_fixtures import QUESTIONS, random_image, tiny_hf_model, tiny_remote_legacy_model, tiny_remote_model  # noqa: F401

from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import ModelLoadError, load_internvl
from makd.mllm.reference import score_per_question

TOLERANCE = 1e-4  # float32; the measured difference is ~1e-6


@pytest.fixture(scope="module")
def hf_parts(tiny_hf_model):  # noqa: F811
    return load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def remote_parts(tiny_remote_model):  # noqa: F811
    return load_internvl(str(tiny_remote_model), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def legacy_parts(tiny_remote_legacy_model):  # noqa: F811
    return load_internvl(str(tiny_remote_legacy_model), device="cpu", dtype="float32")


def _check_against_reference(parts, image, max_tiles, expected_tiles, mode):
    scorer = InternVLScorer(parts, max_tiles=max_tiles, batch_size=3, prefix_mode=mode)  # batches of 3, 3, 1
    assert scorer.prefix_mode == mode
    pixels = scorer.pixels(scorer.prepare(image))  # normalised float32, what the reference path takes
    assert pixels.shape[0] == expected_tiles
    fast = scorer.score([image], QUESTIONS)[0]
    slow = score_per_question(parts, scorer.prompt_ids(QUESTIONS, expected_tiles), pixels, scorer.tokens).numpy()
    assert np.abs(fast - slow).max() <= TOLERANCE
    assert fast.std() > 0.05  # the random model's answers spread out, so the comparison means something
    return fast


@pytest.mark.parametrize(
    ("kind", "mode"),
    [("hf", "packed"), ("hf", "expanded"), ("remote", "packed"), ("legacy", "packed"), ("legacy", "expanded")],
)
def test_shared_prefix_equals_full_forward_per_question(kind, mode, hf_parts, remote_parts, legacy_parts):
    parts = {"hf": hf_parts, "remote": remote_parts, "legacy": legacy_parts}[kind]
    many = _check_against_reference(parts, random_image(500, 375, seed=1), 12, 13, mode)
    one = _check_against_reference(parts, random_image(500, 375, seed=1), 1, 1, mode)
    assert np.abs(many - one).max() > 1e-3  # the tiling reaches the answers


def test_remote_backend_detected_and_driven_through_its_parts(remote_parts, tiny_remote_model):  # noqa: F811
    assert remote_parts.backend == "remote"
    assert type(remote_parts.model).__name__ == "InternVLChatModel"
    tokenizer_id = remote_parts.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert remote_parts.model.img_context_token_id == tokenizer_id  # set as model.chat sets it
    assert remote_parts.tokens_per_tile == remote_parts.model.num_image_token == 16
    assert json.loads((tiny_remote_model / "config.json").read_text())["auto_map"]["AutoModel"].endswith(
        "InternVLChatModel"
    )


def test_legacy_tuple_caches_are_scored_through_the_one_cache_interface(tiny_remote_legacy_model):  # noqa: F811
    """InternLM2's interface (the stand-in reproduces it): tuple caches, untouched by a forward; a 4D mask refused
    by its 2D-mask hook until the compat step lets it through (packed scoring then exact: the test above)."""
    legacy_parts = load_internvl(str(tiny_remote_legacy_model), device="cpu", dtype="float32")  # no hook yet
    ids = torch.tensor([[1, 2, 3, 4]])
    out = legacy_parts.decoder(inputs_embeds=legacy_parts.embed_tokens(ids), use_cache=True)
    cache = out.past_key_values
    assert isinstance(cache, tuple) and len(cache) == 2 and cache[0][0].shape[2] == 4  # (keys, values) per layer
    kept = [t.clone() for layer in cache for t in layer]
    embeds = legacy_parts.embed_tokens(ids[:, :2])
    more = legacy_parts.decoder(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
    assert more.past_key_values[0][0].shape[2] == 6
    assert all(torch.equal(a, b) for a, b in zip(kept, [t for layer in cache for t in layer]))  # given tuple unchanged
    with pytest.raises(ValueError):  # a packed-layout mask [B, 1, q, kv] without the compat hook
        legacy_parts.decoder(inputs_embeds=legacy_parts.embed_tokens(ids), attention_mask=torch.zeros(1, 1, 4, 4))
    scorer = InternVLScorer(legacy_parts, max_tiles=1)
    assert scorer.prefix_mode == "packed" and scorer.packed_attention == "mask"
    assert "4d_mask" in legacy_parts.info["compat"]


def test_batch_size_mode_and_multi_image_calls_do_not_change_numbers(hf_parts):
    images = [random_image(300, 900, seed=2), random_image(448, 448, seed=3)]
    together = InternVLScorer(hf_parts, max_tiles=12, batch_size=16).score(images, QUESTIONS)
    one_by_one = InternVLScorer(hf_parts, max_tiles=12, batch_size=1, prefix_mode="expanded")
    separate = np.stack([one_by_one.score([image], QUESTIONS)[0] for image in images])
    assert together.shape == (2, len(QUESTIONS))
    assert np.abs(together - separate).max() <= 1e-5


@pytest.mark.parametrize("mode", ["packed", "expanded"])
def test_images_batched_in_one_forward_equal_one_image_at_a_time(hf_parts, mode):
    """Same-tile images share the forwards (batch dimension); mixed tile counts are grouped; 1e-5 in float32."""
    images = [random_image(500, 375, seed=s) for s in (30, 31, 32)] + [random_image(448, 448, seed=33)]
    images.insert(1, random_image(64, 48, seed=34))  # 1 tile, between the 13-tile ones: groups keep the order
    batched = InternVLScorer(hf_parts, max_tiles=12, batch_size=3, prefix_mode=mode, images_per_forward=2)
    together = batched.score(images, QUESTIONS)  # 13-tile group: forwards of 2 + 1 images; 1-tile group: 2
    single = InternVLScorer(hf_parts, max_tiles=12, batch_size=3, prefix_mode=mode, images_per_forward=1)
    separate = np.stack([single.score([image], QUESTIONS)[0] for image in images])
    assert together.shape == (5, len(QUESTIONS)) and np.isfinite(together).all()
    assert np.abs(together - separate).max() <= 1e-5
    assert np.abs(together[0] - together[2]).max() > 1e-3  # each row is its own image's answers


def test_yes_no_logits_are_computed_in_float32_from_a_bfloat16_model(tiny_hf_model):  # noqa: F811
    """--dtype bfloat16: the decoder runs in bf16, but the two answer logits and their softmax in float32."""
    from makd.mllm.prefix_scoring import p_yes_from_hidden
    from makd.mllm.yes_no import p_yes_from_logits

    parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="bfloat16")
    assert parts.lm_head.weight.dtype == torch.bfloat16
    scorer = InternVLScorer(parts, max_tiles=1, batch_size=4)
    width = parts.lm_head.weight.shape[1]
    hidden = (torch.randn(64, width, generator=torch.Generator().manual_seed(0)) * 30).to(torch.bfloat16)
    weights = parts.lm_head.weight[[scorer.tokens.yes_id, scorer.tokens.no_id]].double()
    exact = torch.softmax(hidden.double() @ weights.T, dim=-1)[:, 0]  # the same bf16 inputs, float64 arithmetic
    got = p_yes_from_hidden(parts, hidden, scorer.tokens)
    assert got.dtype == torch.float32
    assert (got.double() - exact).abs().max() <= 1e-5
    rounded = p_yes_from_logits(parts.lm_head(hidden), scorer.tokens)  # logits rounded to bf16 first
    assert (rounded.double() - exact).abs().max() > 1e-3  # what the upcast avoids
    image = random_image(64, 48, seed=35)
    reference = InternVLScorer(load_internvl(str(tiny_hf_model), device="cpu", dtype="float32"), max_tiles=1)
    assert np.abs(scorer.score([image], QUESTIONS) - reference.score([image], QUESTIONS)).max() <= 5e-2


def test_first_step_of_greedy_generation_gives_the_same_p_yes(hf_parts):
    scorer = InternVLScorer(hf_parts, max_tiles=2, batch_size=4)
    image = random_image(896, 448, seed=4)
    pixels = scorer.pixels(scorer.prepare(image))  # normalised float32, what the reference path takes
    prompts = scorer.prompt_ids(QUESTIONS[:2], pixels.shape[0])
    forward = score_per_question(hf_parts, prompts, pixels, scorer.tokens)
    generated = score_per_question(hf_parts, prompts, pixels, scorer.tokens, generate_tokens=3)
    assert torch.abs(forward - generated).max() <= TOLERANCE


def test_native_processor_builds_the_same_token_ids_and_forward(hf_parts, tiny_hf_model):  # noqa: F811
    """transformers' own InternVLProcessor + model forward agree with the prompt and the fast path."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(tiny_hf_model))
    scorer = InternVLScorer(hf_parts, max_tiles=12, batch_size=4)
    image = random_image(500, 375, seed=6)
    question = QUESTIONS[2]
    placeholder_prompt = scorer.prompt(question, 1).replace("<img>" + "<IMG_CONTEXT>" * 16 + "</img>", "<IMG_CONTEXT>")
    inputs = processor(images=[image], text=[placeholder_prompt], return_tensors="pt")
    pixels = scorer.pixels(scorer.prepare(image))  # normalised float32, what the reference path takes
    assert inputs["pixel_values"].shape == pixels.shape  # same grid: 13 tiles
    assert inputs["input_ids"][0].tolist() == scorer.prompt_ids([question], 13)[0]
    with torch.inference_mode():
        logits = hf_parts.model(input_ids=inputs["input_ids"], pixel_values=pixels).logits[0, -1]
    p_native = torch.softmax(logits[[scorer.tokens.yes_id, scorer.tokens.no_id]], dim=0)[0].item()
    assert abs(p_native - scorer.score([pixels], [question])[0, 0]) <= TOLERANCE


class IgnoresCustomMasks(torch.nn.Module):
    """A language model that drops the caller's mask and positions, as some remote code does."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, attention_mask=None, position_ids=None, **kwargs):
        return self.decoder(**kwargs)


def test_packed_mode_falls_back_when_the_model_ignores_custom_masks(tiny_hf_model):  # noqa: F811
    parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")
    parts.decoder = IgnoresCustomMasks(parts.decoder)
    with pytest.warns(UserWarning, match="ignores custom attention masks"):
        scorer = InternVLScorer(parts, max_tiles=2, batch_size=4, prefix_mode="packed")
    assert scorer.prefix_mode == "expanded"
    image = random_image(896, 448, seed=7)
    pixels = scorer.pixels(scorer.prepare(image))  # normalised float32, what the reference path takes
    slow = score_per_question(parts, scorer.prompt_ids(QUESTIONS, pixels.shape[0]), pixels, scorer.tokens)
    assert np.abs(scorer.score([pixels], QUESTIONS)[0] - slow.numpy()).max() <= TOLERANCE


def test_not_an_internvl_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="model_type 'bert' is not InternVL"):
        load_internvl(str(tmp_path), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="folder has no config.json"):
        load_internvl(str(empty), device="cpu")
    with pytest.raises(ModelLoadError, match="--dtype 'float8' is unknown"):
        load_internvl(str(tmp_path), device="cpu", dtype="float8")
