"""Attention of packed question suffixes over a shared prefix, without a mask over the prefix.

In packed scoring (prefix_scoring) every suffix token may see the whole cached prefix and the earlier tokens of
its own suffix. An explicit [suffix tokens, prefix + suffix tokens] mask expresses that, but it makes the fused
kernels add a mask to every score and rules out their fast paths; on 2 CPU threads it made the suffix phase 55 %
slower than the same number of key pairs in one causal pass. Softmax attention over a union of key sets
splits exactly into attention over each set, merged by their log-sum-exps (the decomposition shared-prefix
decoders use, e.g. Hydragen and cascade attention):
    out = (out_p * exp(lse_p) + out_s * exp(lse_s)) / (exp(lse_p) + exp(lse_s))
so the prefix part is one unmasked attention of every suffix query at once (grouped-query heads folded into the
query axis, so the prefix KV is never repeated per head), and the own part is a small causal attention over the
suffixes padded side by side.

It needs a kernel that returns the log-sum-exp, which torch exposes as an aten op per device (`_attention_with_lse`):
on the CPU `_scaled_dot_product_flash_attention_for_cpu`; on CUDA the flash kernel for float16 / bfloat16 (head
dimension a multiple of 8, at most 256) and the memory-efficient kernel otherwise. Whether a kernel gives the right
numbers for a model is not assumed: the scorer compares the split with expanded mode on a test prompt at start-up
(prefix_scoring.choose_packed_attention) and keeps the explicit mask when it fails or disagrees, as it does for
language models that do not dispatch attention through transformers' AttentionInterface (remote code with its own
attention classes). The attention implementation registered here behaves exactly as "sdpa" unless a call carries
a `PrefixSplit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMPLEMENTATION = "makd_prefix_split_sdpa"


@dataclass(frozen=True)
class PrefixSplit:
    """Where the packed suffix tokens of one decoder call sit, for `prefix_split_attention`.

    prefix_length: tokens of the cached prefix (the first keys of every layer).
    padded_index:  [n_suffixes, longest] packed position of each suffix's tokens, right-padded with its last one.
    packed_index:  [total tokens] flat index into the padded [n_suffixes * longest] layout of each packed token.
    """

    prefix_length: int
    padded_index: torch.Tensor
    packed_index: torch.Tensor

    @classmethod
    def for_suffixes(cls, lengths: list[int], prefix_length: int, device: torch.device) -> PrefixSplit:
        longest = max(lengths)
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        padded = [[start + min(j, length - 1) for j in range(longest)] for start, length in zip(starts, lengths)]
        packed = [i * longest + j for i, length in enumerate(lengths) for j in range(length)]
        return cls(
            prefix_length=prefix_length,
            padded_index=torch.tensor(padded, dtype=torch.long, device=device),
            packed_index=torch.tensor(packed, dtype=torch.long, device=device),
        )


def _attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool, scale: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, L, D], log-sum-exp of the scaled scores, float32 [B, H, L]); query and key heads equal."""
    aten = torch.ops.aten
    length = query.shape[2]
    if query.device.type == "cpu":
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scale)
    elif cuda_flash_fits(query):
        out, lse = aten._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, False, scale=scale)[:2]
    else:  # float32, or a head size the flash kernel does not take
        efficient = aten._scaled_dot_product_efficient_attention
        out, lse = efficient(query, key, value, None, True, 0.0, causal, scale=scale)[:2]
    # The memory-efficient kernel pads the log-sum-exp's last axis to a multiple of 32 rows.
    return out, lse[..., :length].float()


def cuda_flash_fits(query: torch.Tensor) -> bool:
    """Whether CUDA's flash kernel takes queries like `query` [B, H, L, D] (its dtypes and head sizes)."""
    head_dim = query.shape[-1]
    return query.dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256


def prefix_split_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, split: PrefixSplit, scale: float | None
) -> torch.Tensor:
    """Attention output [B, T, H, D] of T packed suffix tokens: query [B, H, T, D]; key and value
    [B, H_kv, P + T, D] hold the cached prefix (P = split.prefix_length) followed by the packed suffixes."""
    batch, heads, total, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    prefix = split.prefix_length
    # Prefix: no mask, so the queries of one KV head's group are independent rows of one attention.
    out_prefix, lse_prefix = _attention_with_lse(
        query.reshape(batch, kv_heads, group * total, dim), key[:, :, :prefix], value[:, :, :prefix], False, scale
    )
    out_prefix = out_prefix.reshape(batch, heads, total, dim)
    lse_prefix = lse_prefix.reshape(batch, heads, total)
    # Own suffix: [B, H, n_suffixes, longest, D] -> one causal attention per (image, suffix); the right padding
    # repeats each suffix's last token, which no real query sees (it comes after all of them).
    n_suffixes, longest = split.padded_index.shape

    def padded(x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, split.padded_index.flatten()].reshape(batch, x.shape[1], n_suffixes, longest, dim)
        return x.transpose(1, 2).reshape(batch * n_suffixes, x.shape[1], longest, dim)

    own_key, own_value = key[:, :, prefix:], value[:, :, prefix:]
    if group > 1:  # a few dozen tokens per suffix: repeating them is cheaper than another fold
        own_key, own_value = own_key.repeat_interleave(group, 1), own_value.repeat_interleave(group, 1)
    out_own, lse_own = _attention_with_lse(padded(query), padded(own_key), padded(own_value), True, scale)

    def packed(x: torch.Tensor) -> torch.Tensor:  # [B * n_suffixes, H, longest, ...] -> [B, H, T, ...]
        x = x.reshape(batch, n_suffixes, heads, longest, *x.shape[3:]).transpose(1, 2)
        return x.reshape(batch, heads, n_suffixes * longest, *x.shape[4:])[:, :, split.packed_index]

    out_own, lse_own = packed(out_own), packed(lse_own)
    lse = torch.logaddexp(lse_prefix, lse_own)
    out = out_prefix.float() * torch.exp(lse_prefix - lse)[..., None] + out_own.float() * torch.exp(lse_own - lse)[
        ..., None
    ]  # fmt: skip
    return out.to(query.dtype).transpose(1, 2).contiguous()


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers AttentionInterface entry: "sdpa" unless the call carries `prefix_split=PrefixSplit(...)`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    split = kwargs.pop("prefix_split", None)
    if split is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise ValueError("prefix-split attention does not handle sliding windows or soft-capping")
    return prefix_split_attention(query, key, value, split, scaling), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, _attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)  # masks exactly as for "sdpa"


LSE_KERNELS = {
    "cpu": ("_scaled_dot_product_flash_attention_for_cpu",),
    "cuda": ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention"),
}


def kernel_available(device: torch.device) -> bool:
    """Whether this torch has the log-sum-exp attention kernels `_attention_with_lse` calls on `device`."""
    names = LSE_KERNELS.get(device.type)
    return names is not None and all(hasattr(torch.ops.aten, name) for name in names)


def switch_to_prefix_split(decoder: torch.nn.Module) -> str | None:
    """Point `decoder`'s attention at the registered implementation when it dispatches through transformers'
    AttentionInterface with "sdpa" and has no sliding-window layers; returns the implementation it had (to
    restore with `restore_attention`), or None when nothing was changed. Calls without a `PrefixSplit` are
    unaffected."""
    config = getattr(decoder, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous == IMPLEMENTATION:  # another scorer on the same model switched it already
        return "sdpa"
    if previous != "sdpa" or getattr(config, "use_sliding_window", False):
        return None
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return None
    _register()
    config._attn_implementation = IMPLEMENTATION
    return previous


def restore_attention(decoder: torch.nn.Module, previous: str) -> None:
    decoder.config._attn_implementation = previous
