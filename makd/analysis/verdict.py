"""The verdict beside a study table: what its paired differences over seeds allow one to say, written from the
numbers, never by hand.

The rule (RULE below, printed with every verdict): a difference between two conditions counts only when the
95 % t interval of their paired difference over the shared seeds (makd.analysis.statistics.paired_difference, the
interval of the study table) excludes 0. With 3 seeds t(0.975, 2) = 4.30, so only seeds that agree pass it. The
last-epoch test metric is used: the "best" epoch without a validation split is chosen on the test set itself.

A gain is credited to the teacher only when the method is above the reference (CE baseline) *and* above the
random-target control (the paper's Table 3(b)): an auxiliary head on random targets can help on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

from makd.analysis.run_folders import RunResult
from makd.analysis.statistics import CONFIDENCE, PairedDifference, paired_difference

RULE = (
    "Rule: a difference counts when the {level} % t interval of its paired difference over the seeds excludes 0 "
    "(last-epoch test {metric}; with {n} seeds the interval is the mean ± {t:.2f} x sd / √{n}, so only seeds that "
    "agree pass it); a gain is the teacher's only when MaKD is above both the baseline and the random-target "
    "control."
)
# A reference this close to the ceiling leaves no room for a gain: the verdict says so instead of reading noise.
CEILING = 95.0


@dataclass(frozen=True)
class Comparison:
    """`condition` minus `against`, paired by seed; `by_seed` holds the per-seed differences in seed order."""

    condition: str
    against: str
    difference: PairedDifference
    by_seed: tuple[float, ...]

    @property
    def outcome(self) -> str:
        """'above' / 'below' (the interval excludes 0), 'within' (it holds 0), 'no interval' (fewer than 3 seeds,
        or differences that do not vary: statistics.paired_difference says why) or 'no shared seed'."""
        d = self.difference
        if d.n == 0:
            return "no shared seed"
        if not d.has_interval:
            return "no interval"
        if d.low > 0:
            return "above"
        if d.high < 0:
            return "below"
        return "within"

    def sentence(self) -> str:
        """e.g. 'makd minus random: +1.20 [-2.31, +4.71] (by seed +4.20, -0.90, +0.30): within the seed spread'."""
        d = self.difference
        head = f"{self.condition} minus {self.against}: "
        if d.n == 0:
            return head + "no seed in common, nothing to compare"
        seeds = ", ".join(f"{v:+.2f}" for v in self.by_seed)
        if self.outcome == "no interval":
            return head + f"{d.mean:+.2f} ({d.no_interval}): no claim"
        judged = {
            "above": "above 0 beyond the seed spread",
            "below": "below 0 beyond the seed spread",
            "within": "within the seed spread",
        }[self.outcome]
        return head + f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] (by seed {seeds}): {judged}"


@dataclass(frozen=True)
class Verdict:
    """`key` names the branch of the rule taken (tests and tools read it); `text` is what is printed."""

    key: str
    conclusion: str
    comparisons: tuple[Comparison, ...]
    rule: str

    @property
    def text(self) -> str:
        lines = [f"**Verdict: {self.conclusion}**", ""]
        lines += [f"- {c.sentence()}" for c in self.comparisons]
        return "\n".join([*lines, "", self.rule])


def compare(values: Mapping[str, Mapping[int, float]], condition: str, against: str) -> Comparison:
    """The paired comparison of two conditions' {seed: value} maps."""
    ours, theirs = values[condition], values[against]
    shared = sorted(s for s in ours if s in theirs)
    return Comparison(
        condition,
        against,
        paired_difference(ours, theirs),
        tuple(ours[s] - theirs[s] for s in shared),
    )


def last_by_seed(groups: Mapping[str, Sequence[RunResult]]) -> dict[str, dict[int, float]]:
    """{condition: {seed: last-epoch test metric}} of a study's finished runs."""
    return {name: {run.seed: run.last for run in runs} for name, runs in groups.items()}


def rule_text(num_seeds: int, metric: str = "top-1", confidence: float = CONFIDENCE) -> str:
    t = float(stats.t.ppf((1 + confidence) / 2, num_seeds - 1)) if num_seeds >= 2 else math.nan
    return RULE.format(level=int(confidence * 100), metric=metric, n=num_seeds, t=t)


def method_verdict(
    values: Mapping[str, Mapping[int, float]],
    *,
    method: str = "makd",
    reference: str = "baseline",
    control: str | None = "random",
    metric: str = "top-1",
) -> Verdict:
    """What the table shows about `method` against `reference` and the `control` (None or absent: no control run).

    `values` = {condition: {seed: last-epoch test metric in %}}. Raises KeyError when `method` or `reference` has
    no value (the caller decides whether a verdict applies).
    """
    if method not in values or reference not in values:
        raise KeyError(f"a verdict needs {method!r} and {reference!r}; the table has {', '.join(values)}")
    versus_reference = compare(values, method, reference)
    has_control = control is not None and control in values
    versus_control = compare(values, method, control) if has_control else None
    comparisons = (versus_reference,) + ((versus_control,) if versus_control else ())
    seeds = max(c.difference.n for c in comparisons)
    rule = rule_text(seeds, metric)
    key, conclusion = _conclusion(versus_reference, versus_control)
    reference_mean = sum(values[reference].values()) / len(values[reference])
    if reference_mean >= CEILING:
        conclusion += f" The {reference} is already at {reference_mean:.1f} %: too close to the ceiling to show a gain."
    return Verdict(key, conclusion, comparisons, rule)


def _conclusion(reference: Comparison, control: Comparison | None) -> tuple[str, str]:
    """(key, sentence) of the branch of the rule the two comparisons fall in."""
    m, r = reference.condition, reference.against
    if reference.outcome in ("no interval", "no shared seed") or (
        control is not None and control.outcome in ("no interval", "no shared seed")
    ):
        return "undecided", (
            f"no interval from these seeds ({reference.difference.no_interval or 'no shared seed'}): this run shows "
            f"the pipeline, not the method (run 3 or more seeds to compare {m} with {r})."
        )
    if control is None:
        return "no_control", (
            f"{m} minus {r} is {_phrase(reference.outcome)}, but without the random-target control no gain can be "
            "credited to the teacher: an auxiliary head on random targets can help on its own (add the control)."
        )
    c = control.against
    if reference.outcome == "above" and control.outcome == "above":
        return "teacher", (
            f"{m} is above both {r} and the {c} control beyond the seed spread: on this data the teacher's answers "
            "add what the extra head alone does not."
        )
    if control.outcome == "below":
        return "control_better", (
            f"the {c} control is above {m} beyond the seed spread: here the teacher's answers do worse than noise "
            "targets on the same head; this demo shows the pipeline, not the method."
        )
    if reference.outcome == "below":
        return "method_worse", (
            f"{m} is below {r} beyond the seed spread: at this budget the aspect head costs accuracy; this demo "
            "shows the pipeline, not the method."
        )
    if control.outcome == "above":
        return "control_only", (
            f"{m} is above the {c} control beyond the seed spread, but {m} minus {r} is within it: the teacher "
            "beats noise targets without a gain over the baseline that the seeds confirm."
        )
    if reference.outcome == "above":
        return "head_only", (
            f"{m} is above {r} beyond the seed spread, but {m} minus {c} is within it: the gain comes with the "
            "extra head, not from the teacher; this demo shows the pipeline, not the method."
        )
    return "pipeline_only", (
        f"{m} minus {c} and {m} minus {r} are within the seed spread: this demo shows the pipeline, not the method."
    )


def _phrase(outcome: str) -> str:
    return {"above": "above 0 beyond the seed spread", "below": "below 0 beyond the seed spread"}.get(
        outcome, "within the seed spread"
    )
