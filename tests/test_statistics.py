"""Statistics that cannot mislead (issue 20 item 9): a paired interval only from 3 or more seeds whose differences
vary, and tables that say why an interval is missing."""

from __future__ import annotations

import csv
import math

import pytest
from test_report import report, write_run

from makd.analysis.statistics import MIN_SEEDS_FOR_INTERVAL, paired_difference

T_975_2DF = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (statistical tables)


def test_an_interval_needs_three_seeds_with_varying_differences():
    assert MIN_SEEDS_FOR_INTERVAL == 3
    two = paired_difference({0: 61.0, 1: 62.5}, {0: 61.5, 1: 62.0})
    assert (two.mean, two.n, two.has_interval) == (0.0, 2, False) and math.isnan(two.low) and math.isnan(two.high)
    assert two.no_interval == "n=2: an interval needs 3 seeds"
    # 200 test images: accuracy moves in 0.5-point steps, so seeds can all differ by exactly -0.5
    flat = paired_difference({0: 60.0, 1: 61.5, 2: 59.0}, {0: 60.5, 1: 62.0, 2: 59.5})
    assert flat.mean == pytest.approx(-0.5) and not flat.has_interval
    assert flat.no_interval == "the 3 seeds all differ by -0.50: zero spread, no interval"
    varied = paired_difference({0: 53.0, 1: 56.0, 2: 55.0}, {0: 50.0, 1: 52.0, 2: 54.0})
    half = T_975_2DF * math.sqrt(7 / 9)  # differences 3, 4, 1: mean 8/3, sd sqrt(7/3), half-width t * sd / sqrt(3)
    assert varied.has_interval and varied.no_interval == ""
    assert (varied.low, varied.high) == (pytest.approx(8 / 3 - half), pytest.approx(8 / 3 + half))
    none = paired_difference({0: 1.0}, {1: 2.0})
    assert none.n == 0 and none.no_interval == "no shared seed"


def test_the_table_prints_the_reason_not_a_collapsed_interval(tmp_path, capsys):
    # Two seeds whose differences are both -0.50: the table printed "-0.50 [-0.50, -0.50]" before.
    for seed, (base, makd) in enumerate([(61.0, 60.5), (62.5, 62.0)]):
        write_run(tmp_path / "runs" / f"base_s{seed}", seed, base, base, "base", DISTILLER__TYPE="NONE")
        write_run(tmp_path / "runs" / f"makd_s{seed}", seed, makd, makd, "makd", DISTILLER__TYPE="MaKD")
    out = tmp_path / "table"
    runs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert report.main([*runs, "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| makd |"))
    assert "| -0.50 (n=2: an interval needs 3 seeds) | -0.50 (n=2: an interval needs 3 seeds) |" in row
    assert "[" not in row
    assert "an interval is given from 3 or more paired seeds whose differences vary" in markdown
    table = {r["condition"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert table["makd"]["diff_last_mean"] == "-0.5000" and table["makd"]["diff_last_ci_low"] == ""
    assert table["makd"]["diff_no_interval"] == "n=2: an interval needs 3 seeds"
    assert table["base"]["diff_no_interval"] == ""


def test_a_table_of_three_varying_seeds_keeps_its_interval_and_no_note(tmp_path):
    for seed, (base, makd) in enumerate([(50.0, 53.0), (52.0, 56.0), (54.0, 55.0)]):
        write_run(tmp_path / "runs" / f"base_s{seed}", seed, base, base + 1, "base", DISTILLER__TYPE="NONE")
        write_run(tmp_path / "runs" / f"makd_s{seed}", seed, makd, makd + 2, "makd", DISTILLER__TYPE="MaKD")
    out = tmp_path / "table"
    assert report.main([*sorted(str(p) for p in (tmp_path / "runs").iterdir()), "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    assert "| +2.67 [-1.13, +6.46] |" in markdown and "Δ without an interval" not in markdown
