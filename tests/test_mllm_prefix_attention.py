"""Prefix-split attention: equal to one masked attention, and chosen for a model only where it gives the numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mllm_fixtures import QUESTIONS, random_image, tiny_hf_model  # noqa: F401

from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import load_internvl
from makd.mllm.prefix_attention import IMPLEMENTATION, PrefixSplit, prefix_split_attention
from makd.mllm.prefix_scoring import cache_argument
from makd.mllm.reference import score_per_question


def masked_reference(query, key, value, prefix_length, lengths, scale):
    """The same attention through one explicit [T, P + T] mask: prefix visible, own suffix causal."""
    total = sum(lengths)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    order = torch.arange(total)
    own = (segment[:, None] == segment[None, :]) & (order[None, :] <= order[:, None])
    allowed = torch.cat([torch.ones(total, prefix_length, dtype=torch.bool), own], dim=1)
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    out = F.scaled_dot_product_attention(query.double(), key.double(), value.double(), attn_mask=allowed, scale=scale)
    return out.transpose(1, 2)  # [B, T, H, D]


@pytest.mark.parametrize(("heads", "kv_heads", "batch"), [(4, 2, 1), (4, 4, 2), (6, 2, 3)])
@pytest.mark.parametrize("lengths", [[5, 1, 9, 3], [1], [7, 7]])
def test_split_equals_one_masked_attention(heads, kv_heads, batch, lengths):
    generator = torch.Generator().manual_seed(sum(lengths) + heads + batch)
    prefix, dim, total = 37, 16, sum(lengths)
    query = torch.randn(batch, heads, total, dim, generator=generator) * 2
    key = torch.randn(batch, kv_heads, prefix + total, dim, generator=generator) * 2
    value = torch.randn(batch, kv_heads, prefix + total, dim, generator=generator)
    split = PrefixSplit.for_suffixes(lengths, prefix, torch.device("cpu"))
    got = prefix_split_attention(query, key, value, split, scale=0.3)
    expected = masked_reference(query, key, value, prefix, lengths, 0.3)
    assert got.shape == (batch, total, heads, dim) and got.dtype == torch.float32
    assert (got.double() - expected).abs().max() <= 1e-5
    # The own part matters: dropping the suffix keys changes the output by at least 10x the tolerance.
    prefix_only = F.scaled_dot_product_attention(
        query, key[:, :, :prefix].repeat_interleave(heads // kv_heads, 1),
        value[:, :, :prefix].repeat_interleave(heads // kv_heads, 1), scale=0.3,
    ).transpose(1, 2)  # fmt: skip
    assert (got - prefix_only).abs().max() > 1e-4


def test_split_in_bfloat16_stays_close_to_float64():
    generator = torch.Generator().manual_seed(5)
    lengths, prefix = [6, 2, 11], 300
    query = torch.randn(2, 4, sum(lengths), 32, generator=generator)
    key = torch.randn(2, 2, prefix + sum(lengths), 32, generator=generator)
    value = torch.randn(2, 2, prefix + sum(lengths), 32, generator=generator)
    split = PrefixSplit.for_suffixes(lengths, prefix, torch.device("cpu"))
    got = prefix_split_attention(query.bfloat16(), key.bfloat16(), value.bfloat16(), split, scale=None)
    assert got.dtype == torch.bfloat16
    assert (got.double() - masked_reference(query, key, value, prefix, lengths, None)).abs().max() <= 2e-2


def test_padded_layout_indices():
    split = PrefixSplit.for_suffixes([2, 1, 3], 10, torch.device("cpu"))
    assert split.padded_index.tolist() == [[0, 1, 1], [2, 2, 2], [3, 4, 5]]  # right-padded with the last token
    assert split.packed_index.tolist() == [0, 1, 3, 6, 7, 8]


def test_scorer_uses_split_and_matches_an_unswitched_model(tiny_hf_model):  # noqa: F811
    """The reference runs on a separately loaded model whose attention was never switched."""
    parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")
    reference_parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")
    scorer = InternVLScorer(parts, max_tiles=12, batch_size=3)
    assert scorer.packed_attention == "split" and scorer.batch_size == 3
    assert parts.decoder.config._attn_implementation == IMPLEMENTATION
    assert reference_parts.decoder.config._attn_implementation == "sdpa"
    assert scorer.describe()["packed_attention"] == "split"
    image = random_image(500, 375, seed=11)
    pixels = scorer.pixels(scorer.prepare(image))
    fast = scorer.score([image], QUESTIONS)[0]
    slow = score_per_question(reference_parts, scorer.prompt_ids(QUESTIONS, 13), pixels, scorer.tokens).numpy()
    assert np.abs(fast - slow).max() <= 1e-4 and fast.std() > 0.05
    masked = InternVLScorer(reference_parts, max_tiles=12, batch_size=3)
    masked.packed_attention = "mask"  # the explicit-mask path on the same image
    assert np.abs(masked.score([image], QUESTIONS)[0] - fast).max() <= 1e-5
    # A second scorer on the switched model keeps the split path; calls without a PrefixSplit are plain sdpa.
    assert InternVLScorer(parts, max_tiles=1).packed_attention == "split"
    again = score_per_question(parts, scorer.prompt_ids(QUESTIONS[:2], 13), pixels, scorer.tokens).numpy()
    assert np.abs(again - slow[:2]).max() <= 1e-5


def test_default_batch_size_follows_the_prefix_mode(tiny_hf_model):  # noqa: F811
    parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")
    assert InternVLScorer(parts, max_tiles=1).batch_size == 64
    assert InternVLScorer(parts, max_tiles=1, prefix_mode="expanded").batch_size == 16


class TakesNoExtraArguments(torch.nn.Module):
    """A language model whose forward names its arguments and accepts nothing else, as older remote code."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder, self.config = decoder, decoder.config

    def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        # the inner decoder's own name for the cache (`cache` in transformers >= 5.2x, `past_key_values` before)
        return self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=use_cache, **cache_argument(self.decoder, past_key_values))  # fmt: skip


def test_a_model_that_refuses_the_split_argument_keeps_the_mask(tiny_hf_model):  # noqa: F811
    parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")
    parts.decoder = TakesNoExtraArguments(parts.decoder)
    scorer = InternVLScorer(parts, max_tiles=2, batch_size=4)
    assert scorer.prefix_mode == "packed" and scorer.packed_attention == "mask"
    assert parts.decoder.config._attn_implementation == "sdpa"  # switched back after the failed check
    image = random_image(896, 448, seed=12)
    pixels = scorer.pixels(scorer.prepare(image))
    slow = score_per_question(parts, scorer.prompt_ids(QUESTIONS, pixels.shape[0]), pixels, scorer.tokens)
    assert np.abs(scorer.score([pixels], QUESTIONS)[0] - slow.numpy()).max() <= 1e-4


def test_sliding_window_models_are_not_switched(tiny_hf_model):  # noqa: F811
    parts = load_internvl(str(tiny_hf_model), device="cpu", dtype="float32")
    parts.decoder.config.use_sliding_window = True
    scorer = InternVLScorer(parts, max_tiles=1)
    assert scorer.packed_attention == "mask" and parts.decoder.config._attn_implementation == "sdpa"


def test_log_sum_exp_kernels_per_device():
    """CPU and CUDA have kernels the split calls (CUDA's are run by tests/test_cuda_stage2.py); other devices keep
    the explicit mask. CUDA's flash kernel takes half precision with head sizes that are multiples of 8 up to 256;
    everything else goes to the memory-efficient kernel."""
    from makd.mllm.prefix_attention import cuda_flash_fits, kernel_available

    assert kernel_available(torch.device("cpu"))
    assert kernel_available(torch.device("cuda")) == all(
        hasattr(torch.ops.aten, name)
        for name in ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention")
    )
    assert not kernel_available(torch.device("meta")) and not kernel_available(torch.device("mps"))

    def query(dtype, dim):
        return torch.empty(1, 2, 3, dim, dtype=dtype, device="meta")

    assert cuda_flash_fits(query(torch.bfloat16, 128)) and cuda_flash_fits(query(torch.float16, 64))
    assert not cuda_flash_fits(query(torch.float32, 128))  # float32: the memory-efficient kernel
    assert not cuda_flash_fits(query(torch.bfloat16, 12)) and not cuda_flash_fits(query(torch.bfloat16, 264))
