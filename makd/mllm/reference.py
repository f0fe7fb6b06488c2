"""The official script's approach: one full forward per (image, question), the image re-encoded every time.

Kept as the yardstick the fast path is tested and benchmarked against, never used for extraction. With
`generate_tokens > 0` it also runs greedy generation as `model.chat` does and reads the first step's logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from makd.mllm.model_loading import InternVLParts
from makd.mllm.prefix_scoring import last_hidden_state, merge_image_features
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
