"""P(yes) for all questions of one or more images with one prefill of each image's shared prefix.

Every prompt of an image starts with the same tokens (system block + image tokens + whatever the questions
share). Those run once; the question suffixes then run in batches on top of the cached prefix, and only the
last position of each suffix meets the LM head (its Yes and No rows, in float32). After each batch the cache is
cropped back to the prefix and reused. Images with the same tile count have the same prompt tokens, so several
of them form the batch dimension of the same forwards. The numbers equal separate full forwards (the tests hold
them to 1e-4 in float32) and one image at a time (1e-5).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from makd.mllm.model_loading import InternVLParts
from makd.mllm.prefix_attention import PrefixSplit, kernel_available, restore_attention, switch_to_prefix_split
from makd.mllm.prefix_cache import PrefixCache
from makd.mllm.remote_code_compat import FOUR_D_MASK, admit_4d_masks
from makd.mllm.yes_no import YesNoTokens, p_yes_from_logits


@dataclass(frozen=True)
class SplitPrompts:
    """Token ids of Q prompts split into the part they share and the per-question rest (each non-empty)."""

    prefix: list[int]
    suffixes: list[list[int]]


def split_shared_prefix(prompts: Sequence[Sequence[int]]) -> SplitPrompts:
    """Longest common prefix of `prompts`, leaving at least one token in every suffix."""
    if not prompts:
        raise ValueError("no prompts to split")
    shortest = min(len(p) for p in prompts)
    length = 0
    first = prompts[0]
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return SplitPrompts(prefix=list(first[:length]), suffixes=[list(p[length:]) for p in prompts])


def merge_image_features(parts: InternVLParts, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Embeddings of `ids` [B, L] with the `<IMG_CONTEXT>` positions replaced by `features` [B * n, T, hidden]
    (row b's image-context slots take features b*n .. b*n + n - 1, in order)."""
    embeds = parts.embed_tokens(ids)  # [B, L, hidden]
    slots = ids == parts.image_context_id  # [B, L]
    flat = features.reshape(-1, embeds.shape[-1])
    if int(slots.sum()) != flat.shape[0]:
        raise ValueError(
            f"the prompt has {int(slots.sum())} image-context tokens but the image gives {flat.shape[0]} "
            "features; tokens per tile do not match the vision tower"
        )
    embeds = embeds.clone()
    embeds[slots] = flat.to(embeds.dtype)  # boolean indexing walks rows in order: image b gets its own features
    return embeds


def last_hidden_state(output: Any) -> torch.Tensor:
    """[B, L, hidden] from a decoder output object (or the tuple older remote code returns)."""
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def output_cache(output: Any) -> Any:
    """The KV cache a decoder returned: field `cache` in transformers >= 5.2x (`past_key_values` warns there),
    `past_key_values` in older classes and remote code, the second item of a tuple output."""
    fields = getattr(type(output), "__dataclass_fields__", None)
    if fields is None:
        return output[1]
    return getattr(output, "cache" if "cache" in fields else "past_key_values")


@functools.cache
def _cache_keyword(forward_class: type) -> str:
    parameters = inspect.signature(forward_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(decoder: torch.nn.Module, cache: Any) -> dict:
    """{name: cache} for a decoder call, under the name its forward declares (`cache` in current transformers,
    which deprecates `past_key_values` with a warning on every run; `past_key_values` elsewhere)."""
    return {_cache_keyword(type(decoder)): cache}


def p_yes_from_hidden(parts: InternVLParts, hidden: torch.Tensor, tokens: YesNoTokens) -> torch.Tensor:
    """P(yes), float32 [...], from final hidden states [..., hidden] with the Yes/No logits computed in float32.

    Only the two answer rows of the LM head are needed: in bf16/fp16 the full head would round each logit to
    ~3 significant digits before the softmax (a logit gap of 0.01 in 20 is lost), and it costs a vocabulary-wide
    matmul (~150k rows) per question for two numbers. A head that is not a plain Linear runs whole, upcast after.
    """
    head = parts.lm_head
    if isinstance(head, torch.nn.Linear):
        rows = torch.tensor([tokens.yes_id, tokens.no_id], device=head.weight.device)
        pair = hidden.float() @ head.weight[rows].float().T  # [..., 2]
        if head.bias is not None:
            pair = pair + head.bias[rows].float()
        return torch.softmax(pair, dim=-1)[..., 0]
    return p_yes_from_logits(head(hidden), tokens)


PREFIX_MODES = ("packed", "expanded")
# How packed mode keeps a suffix token to the prefix and its own suffix: "split" = unmasked attention over the
# prefix merged with the suffix's own causal attention (prefix_attention); "mask" = one explicit 4D mask.
PACKED_ATTENTIONS = ("split", "mask")


def tokens_through_model(split: SplitPrompts, batch_size: int, mode: str = "packed") -> int:
    """Tokens one image's scoring runs through the language model: its prefix once, then each batch of suffixes
    (packed: end to end; expanded: right-padded to the batch's longest). For the sidecar's cost."""
    total = len(split.prefix)
    for start in range(0, len(split.suffixes), batch_size):
        lengths = [len(s) for s in split.suffixes[start : start + batch_size]]
        total += sum(lengths) if mode == "packed" else len(lengths) * max(lengths)
    return total


def score_shared_prefix(
    parts: InternVLParts,
    split: SplitPrompts,
    features: torch.Tensor,
    tokens: YesNoTokens,
    batch_size: int,
    mode: str = "packed",
    packed_attention: str = "mask",
) -> torch.Tensor:
    """P(yes) per suffix, float32 [Q], for one image: `score_images_shared_prefix` with features[None]."""
    return score_images_shared_prefix(parts, split, features[None], tokens, batch_size, mode, packed_attention)[0]


@torch.inference_mode()
def score_images_shared_prefix(
    parts: InternVLParts,
    split: SplitPrompts,
    features: torch.Tensor,
    tokens: YesNoTokens,
    batch_size: int,
    mode: str = "packed",
    packed_attention: str = "mask",
) -> torch.Tensor:
    """P(yes), float32 [n_images, Q], for images with the same tile count (hence the same prompt tokens).

    `features` [n_images, n_tiles, tokens_per_tile, hidden] must all lie in the prefix. The images are the batch
    dimension: one prefill over [n_images, prefix] and, per batch of suffixes, one forward over
    [n_images, suffix tokens], so a small per-image batch (1 tile, few questions) still fills the device.
    mode "packed": each batch of suffixes is laid end to end after the prefix cache of its image, with a mask
    that lets a token see the prefix and the earlier tokens of its own suffix only, and positions restarting
    at the prefix length for each suffix. The prefix KV is never copied per question, so memory stays that of
    one sequence per image (an 8B teacher's 13-tile prefix is ~0.45 GB of KV; 50 copies would not fit a GPU).
    `packed_attention` (PACKED_ATTENTIONS) says how that visibility is enforced; the decoder must have been
    switched with `prefix_attention.switch_to_prefix_split` for "split".
    mode "expanded": each image's prefix cache is repeated over a batch of right-padded suffixes (plain batched
    decoding).
    """
    if mode not in PREFIX_MODES:
        raise ValueError(f"prefix mode {mode!r} is unknown (use {', '.join(PREFIX_MODES)})")
    if packed_attention not in PACKED_ATTENTIONS:
        raise ValueError(f"packed attention {packed_attention!r} is unknown (use {', '.join(PACKED_ATTENTIONS)})")
    n_images = features.shape[0]
    prefix = torch.tensor([split.prefix] * n_images, dtype=torch.long, device=parts.device)
    embeds = merge_image_features(parts, prefix, features.flatten(0, 1))
    cache = PrefixCache.of(output_cache(parts.decoder(inputs_embeds=embeds, use_cache=True)))
    scores = []
    rows = [1]  # copies of each image's prefix the cache holds (expanded mode grows it once)
    for start in range(0, len(split.suffixes), batch_size):
        chunk = split.suffixes[start : start + batch_size]
        if mode == "packed":
            last_hidden, added = _packed_batch(parts, cache, chunk, len(split.prefix), n_images, packed_attention)
        else:
            last_hidden, added = _expanded_batch(parts, cache, chunk, rows, n_images)
        scores.append(p_yes_from_hidden(parts, last_hidden, tokens))  # [n_images, len(chunk)]
        cache.restore(added)  # back to the shared prefix
    return torch.cat(scores, dim=1).float().cpu()


def _packed_batch(
    parts: InternVLParts, cache: PrefixCache, chunk: list[list[int]], prefix_length: int, n_images: int, attention: str
) -> tuple[torch.Tensor, int]:
    """Hidden states at each suffix's last token [n_images, len(chunk), hidden], and how many tokens were added."""
    device = parts.device
    lengths = torch.tensor([len(s) for s in chunk], device=device)
    total = int(lengths.sum())
    ids = torch.tensor([[t for s in chunk for t in s]] * n_images, dtype=torch.long, device=device)  # [B, total]
    segment = torch.repeat_interleave(torch.arange(len(chunk), device=device), lengths)  # suffix of each token
    starts = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(total, device=device) - starts[segment]  # position inside its own suffix
    positions = (prefix_length + offset)[None].expand(n_images, -1)
    if attention == "split":
        out = parts.decoder(
            inputs_embeds=parts.embed_tokens(ids),
            position_ids=positions,
            **cache_argument(parts.decoder, cache.argument()),
            use_cache=True,
            prefix_split=PrefixSplit.for_suffixes([len(s) for s in chunk], prefix_length, device),
        )
        return last_hidden_state(out)[:, starts + lengths - 1], total
    order = torch.arange(total, device=device)
    own = (segment[:, None] == segment[None, :]) & (order[None, :] <= order[:, None])  # [total, total]
    allowed = torch.cat([torch.ones(total, prefix_length, dtype=torch.bool, device=device), own], dim=1)
    # Additive float mask: 0 = attend, dtype minimum = blocked (works for eager and sdpa attention alike).
    mask = torch.zeros(allowed.shape, dtype=parts.dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(parts.dtype).min)
    out = parts.decoder(
        inputs_embeds=parts.embed_tokens(ids),
        attention_mask=mask[None, None].expand(n_images, 1, -1, -1),
        position_ids=positions,
        **cache_argument(parts.decoder, cache.argument()),
        use_cache=True,
    )
    return last_hidden_state(out)[:, starts + lengths - 1], total  # [n_images, len(chunk), hidden]


def _expanded_batch(
    parts: InternVLParts, cache: PrefixCache, chunk: list[list[int]], rows: list[int], n_images: int
) -> tuple[torch.Tensor, int]:
    """As `_packed_batch`, with each image's cache row repeated len(chunk) times (`rows[0]` tracks the count)."""
    device = parts.device
    if len(chunk) != rows[0]:
        if rows[0] == 1:
            cache.repeat_rows(len(chunk))  # image-major: rows b*len(chunk) .. hold image b
        else:  # only the last, smaller batch gets here: keep the first len(chunk) copies of each image
            keep = torch.arange(n_images, device=device)[:, None] * rows[0] + torch.arange(len(chunk), device=device)
            cache.select_rows(keep.flatten())
        rows[0] = len(chunk)
    width = max(len(s) for s in chunk)
    lengths = torch.tensor([len(s) for s in chunk] * n_images, device=device)
    # Right padding with each row's own last token: in a causal model nothing real attends to it.
    padded = [s + [s[-1]] * (width - len(s)) for s in chunk]
    ids = torch.tensor(padded * n_images, dtype=torch.long, device=device)  # [n_images * len(chunk), width]
    out = parts.decoder(
        inputs_embeds=parts.embed_tokens(ids), **cache_argument(parts.decoder, cache.argument()), use_cache=True
    )
    last = last_hidden_state(out)[torch.arange(ids.shape[0], device=device), lengths - 1]
    return last.reshape(n_images, len(chunk), -1), width


def choose_packed_attention(parts: InternVLParts, tokens: YesNoTokens, context_ids: Sequence[int]) -> str | None:
    """The packed attention this language model gives the right numbers with: "split" where its kernel exists and
    the model dispatches attention through transformers (the decoder is switched for it), else "mask" (for
    decoders that build their mask from a 2D one, such as InternLM2's, with the 4D mask let through:
    remote_code_compat.admit_4d_masks, recorded in parts.info["compat"]), else None (use expanded mode).

    Some remote-code language models build their own masks, or take no extra arguments, and would silently
    ignore or misread ours, so each candidate is compared once with expanded mode on a short text-only prompt
    (`context_ids`, no image tokens).
    """
    context = list(context_ids)
    split = SplitPrompts(prefix=context, suffixes=[context[:3], context[:1], context[-2:]])
    no_image = torch.zeros(0, 1, parts.embed_tokens.weight.shape[-1], dtype=parts.dtype, device=parts.device)
    expanded = score_shared_prefix(parts, split, no_image, tokens, batch_size=3, mode="expanded")
    tolerance = 1e-4 if parts.dtype == torch.float32 else 2e-2

    def agrees(attention: str) -> bool:
        try:
            packed = score_shared_prefix(parts, split, no_image, tokens, 3, "packed", attention)
        except (TypeError, ValueError, RuntimeError):  # an argument the model does not take, a shape it refuses
            return False
        return bool((packed - expanded).abs().max() <= tolerance)

    if kernel_available(parts.device):
        previous = switch_to_prefix_split(parts.decoder)
        if previous is not None:
            if agrees("split"):
                return "split"
            restore_attention(parts.decoder, previous)
    if agrees("mask"):
        return "mask"
    undo = admit_4d_masks(parts.decoder)
    if undo is not None:
        if agrees("mask"):
            parts.info.setdefault("compat", []).append(FOUR_D_MASK)
            return "mask"
        undo()
    return None
