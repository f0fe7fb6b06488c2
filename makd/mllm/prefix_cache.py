"""The KV cache of a prefilled prefix, whatever kind the language model returns, behind one interface.

Shared-prefix scoring prefills an image's prefix once and runs batches of question suffixes on top of it; after
each batch the cache must be back to the prefix. Language models hand back one of two kinds of cache:
- a transformers `Cache` object (transformers' own classes, e.g. Qwen2): the decoder appends the suffix to it in
  place, so it is cropped back after each batch;
- a legacy tuple `((keys, values), ...)` per layer (remote code written before transformers 4.36, e.g. the
  InternLM2 of InternVL2/2.5-8B): the decoder returns a new, longer tuple and leaves the one it was given as it
  was, so the prefix tuple is simply passed again.
`PrefixCache.of(cache)` wraps either; the scorer never asks which kind it holds.
"""

from __future__ import annotations

from typing import Any

import torch


class PrefixCache:
    """One image batch's prefix cache: `argument` goes to the decoder, `restore` after each suffix batch."""

    @staticmethod
    def of(cache: Any) -> PrefixCache:
        if isinstance(cache, (tuple, list)):
            return LegacyTupleCache(cache)
        if cache is None:
            raise ValueError("the language model returned no KV cache (use_cache=True was ignored)")
        return TransformersCache(cache)

    def argument(self) -> Any:
        """What to pass to the decoder as its cache."""
        raise NotImplementedError

    def restore(self, added: int) -> None:
        """Back to the prefix after a forward that appended `added` tokens."""
        raise NotImplementedError

    def repeat_rows(self, times: int) -> None:
        """Each batch row `times` times, row-major (rows b*times .. b*times + times - 1 hold row b)."""
        raise NotImplementedError

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep the rows `index` [n] in that order."""
        raise NotImplementedError


class TransformersCache(PrefixCache):
    """A transformers `Cache` (DynamicCache and kin), grown in place by each forward."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def argument(self) -> Any:
        return self.cache

    def restore(self, added: int) -> None:
        self.cache.crop(-added)  # negative = tokens to remove

    def repeat_rows(self, times: int) -> None:
        self.cache.batch_repeat_interleave(times)

    def select_rows(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)


class LegacyTupleCache(PrefixCache):
    """A tuple of per-layer (keys [B, kv heads, L, d], values [B, kv heads, L, d]); never modified by a forward."""

    def __init__(self, layers: Any) -> None:
        self.layers = tuple(tuple(layer) for layer in layers)

    def argument(self) -> Any:
        return self.layers

    def restore(self, added: int) -> None:
        pass  # the forward returned a longer tuple and left this one as it was

    def repeat_rows(self, times: int) -> None:
        self.layers = tuple(tuple(t.repeat_interleave(times, dim=0) for t in layer) for layer in self.layers)

    def select_rows(self, index: torch.Tensor) -> None:
        self.layers = tuple(tuple(t.index_select(0, index) for t in layer) for layer in self.layers)
