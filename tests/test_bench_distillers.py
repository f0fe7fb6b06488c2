"""tools/bench_distillers.py builds every method through the registry and the trainer's optimizer, and prints one
row per method with its ratios to the first (NONE)."""

from __future__ import annotations

from tool_modules import load_tool


def test_the_benchmark_prints_a_row_per_method(capsys):
    methods = "NONE,KD,KD+DOT,MLKD,CRD,MaKD_AT"
    bench = load_tool("bench_distillers")
    argv = ["--methods", methods, "--student", "resnet8", "--teacher", "resnet14", "--classes", "5"]
    assert bench.main([*argv, "--batch", "4", "--size", "16", "--steps", "1", "--rounds", "1", "--threads", "1"]) == 0
    rows = [
        line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "ms" not in line
    ]
    names = [row[0].lstrip("| ") for row in rows if not row[0].startswith("|---")]
    assert names == [*methods.split(","), "teacher forward alone"]
    assert rows[0][3:] == ["1.00", "1.00 |"]  # NONE against itself
