"""What a stage-2 teacher spent: prompts scored, tokens and wall seconds, at image and at class level alike.

Every sidecar of stage 2 records two dicts with the same fields (COST_FIELDS):
- `cost_this_run`: what the process that wrote the file spent;
- `cost`: everything the file cost, summed over the runs that made it (a run and its `--resume`s, whose
  earlier spending the partial file records) and over the shards `merge_shards` joins. Its seconds are summed
  compute time, not elapsed time when shards ran in parallel.

`prompt_tokens` counts each prompt's tokens once, as if it were run on its own (what a one-forward-per-prompt
run would process); `tokens_processed` counts what went through the language model, so a shared image prefix
counts once per image and padding counts. A server's own `usage.prompt_tokens` fills both for the openai
backend (its prefix caching is not visible to the client). A field the backend cannot know is None.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

COST_FIELDS = ("prompts_scored", "prompt_tokens", "tokens_processed", "seconds")


class Cost:
    """A scorer's running totals: prompts scored, prompt tokens (unpadded), tokens through the model."""

    def __init__(self) -> None:
        self.prompts = 0
        self.prompt_tokens = 0
        self.tokens_processed = 0

    def describe(self, seconds: float) -> dict[str, Any]:
        return {
            "prompts_scored": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "tokens_processed": self.tokens_processed,
            "seconds": round(seconds, 3),
        }


def add_costs(costs: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Field-wise sum of cost dicts; a field unknown (None or absent) in any of them is None in the sum.

    None when there is no cost at all (every input None): an older file that recorded none.
    """
    present = [c for c in costs if c is not None]
    if not present:
        return None
    total: dict[str, Any] = {}
    for key in COST_FIELDS:
        values = [c.get(key) for c in present]
        if any(v is None for v in values):
            total[key] = None
        else:
            total[key] = round(sum(values), 3) if key == "seconds" else int(sum(values))
    if any(c.get("simulated") for c in present):
        total["simulated"] = True
    return total


class CostMeter:
    """This run's cost of a scorer, and the increments since the last call of `increment` (for partial files)."""

    def __init__(self, cost: Cost) -> None:
        self.cost = cost
        self.started = time.perf_counter()
        self._written = {key: 0 for key in COST_FIELDS}

    def this_run(self) -> dict[str, Any]:
        return self.cost.describe(time.perf_counter() - self.started)

    def increment(self) -> dict[str, Any]:
        """What was spent since the previous increment (the first: since the meter started)."""
        now = self.this_run()
        delta = {key: now[key] - self._written[key] for key in COST_FIELDS}
        delta["seconds"] = round(delta["seconds"], 3)
        self._written = now
        return delta


def total_cost(earlier: Mapping[str, Any] | None, resumed_rows: int, this_run: Mapping[str, Any]) -> dict[str, Any]:
    """A file's `cost`: this run's plus what the partial file recorded of the earlier runs.

    Rows resumed from a partial file that recorded no cost (written by an older makd) make the total unknown:
    every field None, never a silent undercount.
    """
    if resumed_rows and earlier is None:
        return {key: None for key in COST_FIELDS}
    return add_costs([earlier, this_run])
