"""The verdict beside a study table (makd.analysis.verdict): each branch of the rule on hand-made numbers, and the
interval it quotes computed by hand."""

from __future__ import annotations

import math

import pytest

from makd.analysis.verdict import CEILING, compare, method_verdict, rule_text

BASELINE = {0: 70.0, 1: 71.0, 2: 72.0}


def shifted(values: dict[int, float], by: tuple[float, ...]) -> dict[int, float]:
    """`values` plus a per-seed difference: the paired differences are exactly `by`."""
    return {seed: value + d for (seed, value), d in zip(sorted(values.items()), by)}


AGREE_UP = (4.0, 4.5, 4.0)  # seeds agree: the 95 % interval excludes 0
SPREAD = (4.0, -1.0, -1.5)  # seeds disagree: it holds 0
AGREE_DOWN = (-3.0, -2.5, -3.5)


def three_conditions(makd_minus_baseline, makd_minus_random):
    makd = shifted(BASELINE, makd_minus_baseline)
    random = shifted(makd, tuple(-d for d in makd_minus_random))
    return {"baseline": BASELINE, "makd": makd, "random": random}


@pytest.mark.parametrize(
    ("versus_baseline", "versus_random", "key", "words"),
    [
        (AGREE_UP, AGREE_UP, "teacher", "above both baseline and the random control beyond the seed spread"),
        (AGREE_UP, SPREAD, "head_only", "the gain comes with the extra head, not from the teacher"),
        (SPREAD, SPREAD, "pipeline_only", "this demo shows the pipeline, not the method"),
        (SPREAD, AGREE_DOWN, "control_better", "the random control is above makd beyond the seed spread"),
        (AGREE_UP, AGREE_DOWN, "control_better", "the random control is above makd beyond the seed spread"),
        (AGREE_DOWN, SPREAD, "method_worse", "makd is below baseline beyond the seed spread"),
        (AGREE_DOWN, AGREE_UP, "method_worse", "the aspect head costs accuracy"),
        (SPREAD, AGREE_UP, "control_only", "the teacher beats noise targets without a gain over the baseline"),
    ],
)
def test_each_branch_of_the_rule(versus_baseline, versus_random, key, words):
    values = three_conditions(versus_baseline, versus_random)
    verdict = method_verdict(values)
    assert verdict.key == key
    assert words in verdict.conclusion
    assert [(c.condition, c.against) for c in verdict.comparisons] == [("makd", "baseline"), ("makd", "random")]
    assert verdict.comparisons[0].by_seed == pytest.approx(versus_baseline)
    assert verdict.comparisons[1].by_seed == pytest.approx(versus_random)
    # Only where the teacher beats the control does the verdict not call it "the pipeline, not the method".
    assert ("not the method" in verdict.conclusion) == (key not in ("teacher", "control_only"))


def test_the_interval_quoted_is_the_paired_t_interval_computed_by_hand():
    values = three_conditions(AGREE_UP, AGREE_UP)
    sentence = compare(values, "makd", "random").sentence()
    # d = (4, 4.5, 4): mean 4.1667, sd sqrt(1/12) = 0.28868, t(0.975, 2) = 4.3027, half = 4.3027 * 0.28868 / sqrt(3)
    half = 4.302653 * math.sqrt(1 / 12) / math.sqrt(3)
    assert half == pytest.approx(0.71711, abs=1e-5)
    assert sentence == (
        f"makd minus random: +4.17 [{4.1667 - half:+.2f}, {4.1667 + half:+.2f}] (by seed +4.00, +4.50, +4.00): "
        "above 0 beyond the seed spread"
    )
    assert sentence.startswith("makd minus random: +4.17 [+3.45, +4.88]")
    within = compare(three_conditions(SPREAD, SPREAD), "makd", "baseline")
    assert within.outcome == "within" and within.difference.low < 0 < within.difference.high
    assert within.sentence().endswith("(by seed +4.00, -1.00, -1.50): within the seed spread")


def test_pairing_uses_only_the_shared_seeds():
    values = {"baseline": {0: 70.0, 1: 71.0, 2: 72.0, 3: 10.0}, "makd": {0: 74.0, 1: 75.5, 2: 76.0}}
    comparison = compare(values, "makd", "baseline")
    assert comparison.difference.n == 3 and comparison.by_seed == (4.0, 4.5, 4.0)


def test_one_seed_gives_no_interval_and_no_claim():
    values = {"baseline": {0: 74.84}, "makd": {0: 79.53}, "random": {0: 75.31}}
    verdict = method_verdict(values)
    assert verdict.key == "undecided"
    assert verdict.comparisons[0].outcome == "no interval"
    assert verdict.comparisons[0].sentence() == (
        "makd minus baseline: +4.69 (n=1: an interval needs 3 seeds): no claim"
    )
    assert "shows the pipeline, not the method" in verdict.conclusion


def test_without_the_control_no_gain_is_credited_to_the_teacher():
    values = three_conditions(AGREE_UP, AGREE_UP)
    del values["random"]
    verdict = method_verdict(values)
    assert verdict.key == "no_control"
    assert "makd minus baseline is above 0 beyond the seed spread" in verdict.conclusion
    assert "without the random-target control no gain can be credited to the teacher" in verdict.conclusion
    assert len(verdict.comparisons) == 1


def test_a_baseline_at_the_ceiling_is_named():
    high = {seed: CEILING + 1 + seed * 0.5 for seed in range(3)}
    values = {"baseline": high, "makd": shifted(high, (0.5, -0.5, 0.0)), "random": shifted(high, (0.0, 0.5, -0.5))}
    verdict = method_verdict(values)
    assert verdict.key == "pipeline_only"
    assert f"The baseline is already at {CEILING + 1.5:.1f} %: too close to the ceiling" in verdict.conclusion
    assert "ceiling" not in method_verdict(three_conditions(SPREAD, SPREAD)).conclusion


def test_the_rule_is_printed_with_the_t_quantile_of_the_seed_count():
    assert "with 3 seeds the interval is the mean ± 4.30 x sd / √3" in rule_text(3)
    assert "± 2.78 x sd / √5" in rule_text(5)
    verdict = method_verdict(three_conditions(SPREAD, SPREAD))
    assert verdict.rule == rule_text(3)
    text = verdict.text
    assert text.startswith("**Verdict: makd minus random and makd minus baseline are within the seed spread")
    assert "- makd minus baseline: " in text and "- makd minus random: " in text and text.endswith(rule_text(3))


def test_a_missing_method_or_reference_is_a_key_error():
    with pytest.raises(KeyError, match="needs 'makd' and 'baseline'"):
        method_verdict({"baseline": BASELINE, "random": BASELINE})


def test_two_seeds_or_differences_without_spread_give_no_interval_and_no_claim():
    two = {"baseline": {0: 70.0, 1: 71.0}, "makd": {0: 74.0, 1: 75.5}, "random": {0: 70.5, 1: 70.0}}
    verdict = method_verdict(two)
    assert verdict.key == "undecided" and verdict.comparisons[0].outcome == "no interval"
    assert "n=2: an interval needs 3 seeds" in verdict.conclusion
    flat = {"baseline": {0: 70.0, 1: 71.0, 2: 72.0}, "makd": {0: 70.5, 1: 71.5, 2: 72.5},
            "random": {0: 70.0, 1: 71.0, 2: 72.0}}  # fmt: skip
    verdict = method_verdict(flat)  # every seed +0.50: zero spread, as 200 test images move in 0.5-point steps
    assert verdict.key == "undecided"
    assert verdict.comparisons[0].sentence().endswith("zero spread, no interval): no claim")
