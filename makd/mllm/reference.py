"""The yardsticks of stage-2 scoring, never used for extraction.

- The official script's approach: one full forward per (image, question), the image re-encoded every time
  (`score_per_question`); with `generate_tokens > 0` it also runs greedy generation as `model.chat` does and
  reads the first step's logits. The fast path is tested and benchmarked against it.
- The bound of any exact shared-prefix method (`bound_pass`): the image encoded once and one plain causal
  forward over the prefix and every suffix laid end to end. Its answers are not the right ones (each suffix
  also sees the suffixes before it); only its time counts, in the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from makd.mllm.model_loading import InternVLParts
from makd.mllm.prefix_scoring import SplitPrompts, last_hidden_state, merge_image_features, p_yes_from_hidden
from makd.mllm.yes_no import YesNoTokens, p_yes_from_logits


@torch.inference_mode()
def score_one_prompt(
    parts: InternVLParts,
    prompt_ids: Sequence[int],
    pixels: torch.Tensor,
    tokens: YesNoTokens,
    generate_tokens: int = 0,
) -> float:
    """P(yes) of one full prompt: encode the image, embed, run the whole sequence, read the last position."""
    features = parts.encode_images(pixels.to(parts.device, parts.dtype))
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=parts.device)
    embeds = merge_image_features(parts, ids, features)
    if generate_tokens > 0:
        out = parts.generator.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=generate_tokens,
            min_new_tokens=generate_tokens,  # a random model must not stop early: time the whole generation
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tokens.no_id,
        )
        logits = out.logits[0][0]  # first generated step, raw logits [vocab]
    else:
        hidden = last_hidden_state(parts.decoder(inputs_embeds=embeds, use_cache=False))
        logits = parts.lm_head(hidden[0, -1])
    return float(p_yes_from_logits(logits, tokens))


def score_per_question(
    parts: InternVLParts,
    prompts: Sequence[Sequence[int]],
    pixels: torch.Tensor,
    tokens: YesNoTokens,
    generate_tokens: int = 0,
) -> torch.Tensor:
    """P(yes) for each full prompt of one image, float32 [Q], one independent pass each."""
    return torch.tensor([score_one_prompt(parts, p, pixels, tokens, generate_tokens) for p in prompts])


@torch.inference_mode()
def bound_pass(parts: InternVLParts, split: SplitPrompts, pixels: torch.Tensor, tokens: YesNoTokens) -> torch.Tensor:
    """The least work of an exact method for one image, float32 [Q] (not P(yes): see the module doc): encode
    `pixels` [n_tiles, 3, S, S] once, one causal forward over prefix + all suffixes, the Yes/No rows at each
    suffix's last token."""
    features = parts.encode_images(pixels.to(parts.device, parts.dtype))
    ids = split.prefix + [t for s in split.suffixes for t in s]
    ids = torch.tensor([ids], dtype=torch.long, device=parts.device)
    hidden = last_hidden_state(parts.decoder(inputs_embeds=merge_image_features(parts, ids, features), use_cache=False))
    ends = torch.cumsum(torch.tensor([len(s) for s in split.suffixes], device=parts.device), 0) + len(split.prefix) - 1
    return p_yes_from_hidden(parts, hidden[0, ends], tokens)
