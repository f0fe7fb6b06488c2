"""tools/demo.py, what `make demo` runs, on a reduced variant (48 training images, 1 epoch, 2 seeds): the study it
trains, the table and verdict it prints and writes to table.md, the same numbers whether its runs go one or two at a
time, a second call that trains nothing, and the refusals that keep a table from mixing data."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tool_modules import load_tool

from makd.analysis.verdict import method_verdict
from makd.formats.files import sha256_file

REDUCED = ["--train-per-class", "3", "--test-per-class", "2", "--epochs", "1",
           "DATASET.CACHE_IMAGES", "False", "SOLVER.BATCH_SIZE", "16"]  # fmt: skip
RUNS, SEEDS = ("baseline", "makd", "random"), (0, 1)


def run_demo_command(*argv: str) -> tuple[int, str, str]:
    """tools/demo.py's main, as `make demo` runs it; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load_tool("demo").main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The reduced demo, two runs at a time: 3 runs x 2 seeds."""
    root = tmp_path_factory.mktemp("demo")
    argv = ["--data", str(root / "data"), "--out", str(root / "out"), "--seeds", "0,1", "--jobs", "2", *REDUCED]
    code, printed, errors = run_demo_command(*argv)
    assert code == 0, errors
    return {"root": root, "data": root / "data", "out": root / "out", "argv": argv, "printed": printed}


def summaries(out: Path) -> dict[tuple[str, int], dict]:
    return {
        (path.parent.parent.name, int(path.parent.name.removeprefix("seed"))): json.loads(path.read_text())
        for path in sorted(out.glob("*/seed*/summary.json"))
    }


TIMING_KEYS = ("seconds", "_per_s")  # wall-clock measurements, the only logged values allowed to differ


def logged_values(run_dir: Path) -> dict[str, float]:
    """Every number the trainer logged per epoch but its timings (losses, accuracies, aspect MAE, lr)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        f"{row['epoch']}/{key}": value
        for row in rows
        for key, value in row.items()
        if isinstance(value, (int, float)) and not any(t in key for t in TIMING_KEYS)
    }


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "student.pth", map_location="cpu", weights_only=False)["model"]


def test_the_demo_trains_a_study_and_prints_its_table_and_verdict(demo):
    out, printed = demo["out"], demo["printed"]
    found = summaries(out)
    assert sorted(found) == sorted((run, seed) for run in RUNS for seed in SEEDS)
    for (run, seed), summary in found.items():
        assert summary["seed"] == seed and summary["epochs"] == 1 and summary["num_train_images"] == 48
        assert summary["num_aspects"] == (0 if run == "baseline" else 16)
        assert summary["targets"] == {"baseline": None, "makd": "teacher", "random": "random"}[run]
        config = yaml.safe_load((out / run / f"seed{seed}" / "config.yaml").read_text())
        assert config["NUM_THREADS"] == 1  # the thread count the table is that of, in every run's config

    # Progress: which run of how many, and an estimate of the time left once a run has finished.
    assert [int(n) for n in re.findall(r"\[study\] run (\d)/6 ", printed)] == [1, 2, 3, 4, 5, 6]
    finished = [line for line in printed.splitlines() if ": finished in " in line]
    assert len(finished) == 6 and all(re.search(r"\(CPU \d+s\); \d/6 finished", line) for line in finished)
    assert "about " in finished[0] and "left" in finished[0]

    # table.md is what was printed, and holds the study table, the values by seed, the verdict and the machine.
    table = (out / "table.md").read_text()
    assert table in printed
    assert table.startswith(f"Made by `{shlex.join(['python', 'tools/demo.py', *demo['argv']])}` on ")
    assert re.search(r"on \d{4}-\d\d-\d\d, commit \S+.*, \d+ cores, 1 thread per run, 2 runs at a time", table)
    assert "48 train / 32 test images" in table and "1 epoch," in table
    for run in RUNS:
        last = [found[(run, seed)]["test_top1_last"] for seed in SEEDS]
        assert f"| {run} | {last[0]:.2f} | {last[1]:.2f} |" in table  # the by-seed table
    values = {run: {seed: found[(run, seed)]["test_top1_last"] for seed in SEEDS} for run in RUNS}
    verdict = method_verdict(values)  # generated from the runs' own numbers
    assert verdict.text in table and table.count("**Verdict: ") == 1
    with open(out / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["condition"], int(r["seed"])): float(r["test_top1_last"]) for r in rows} == pytest.approx(
        {key: s["test_top1_last"] for key, s in found.items()}, abs=1e-4
    )

    # Costs: one entry per run; each its own CPU time, not the sum of the runs reaped before it.
    timing = json.loads((out / "timing.json").read_text())
    cpu = [cost["cpu_seconds"] for cost in timing["runs"].values()]
    assert len(cpu) == 6 and min(cpu) > 0 and max(cpu) < 2 * min(cpu)
    assert (timing["threads"], timing["jobs"]) == (1, 2)


def test_the_demo_is_a_study_that_tools_study_tables_the_same(demo):
    results = (demo["out"] / "results.md").read_text()
    code = load_tool("study").main([str(demo["out"] / "study.yaml"), "--no-run", "--no-plots"])
    assert code == 0
    rebuilt = (demo["out"] / "results.md").read_text()
    assert rebuilt.split("\n\nStudy file ")[0] == results.rstrip("\n")  # tools/study.py adds a note, same table


def test_one_run_at_a_time_gives_the_same_numbers_as_two(demo, tmp_path):
    alone = tmp_path / "alone"
    code, _, errors = run_demo_command(
        "--data", str(demo["data"]), "--out", str(alone), "--runs", "baseline,makd", "--seeds", "0,1",
        "--jobs", "1", *REDUCED,
    )  # fmt: skip
    assert code == 0, errors
    side_by_side, one_by_one = summaries(demo["out"]), summaries(alone)
    assert sorted(one_by_one) == [("baseline", 0), ("baseline", 1), ("makd", 0), ("makd", 1)]
    for key in one_by_one:
        run_dir = f"{key[0]}/seed{key[1]}"
        logged = logged_values(alone / run_dir)
        assert any("loss" in k for k in logged) and logged == logged_values(demo["out"] / run_dir)  # bit for bit
        assert one_by_one[key]["test_top1_last"] == side_by_side[key]["test_top1_last"]
        ours, theirs = weights(alone / run_dir), weights(demo["out"] / run_dir)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_second_call_trains_nothing_and_prints_the_same_table(demo):
    before = (demo["out"] / "table.md").read_text()
    code, printed, errors = run_demo_command(*demo["argv"])
    assert code == 0, errors
    assert "6 runs (3 conditions x 2 seeds), 6 already finished; training 0" in printed
    assert "[study] run " not in printed
    after = (demo["out"] / "table.md").read_text()
    # The same text, the time of the call that trained the runs included; only the date may have moved on.
    assert re.sub(r"on \d{4}-\d\d-\d\d,", "", after) == re.sub(r"on \d{4}-\d\d-\d\d,", "", before)
    assert "2 runs at a time" in after.splitlines()[0] and after.splitlines()[-1].startswith("Time: ")


def test_runs_of_other_data_are_refused_and_kept(demo, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo["out"], out)
    before = {p: sha256_file(p) for p in out.rglob("*") if p.is_file()}
    other = tmp_path / "other_data"
    code, _, errors = run_demo_command(
        "--data", str(other), "--out", str(out), "--seeds", "0,1", "--data-seed", "1", *REDUCED
    )
    assert code == 2
    assert errors.startswith(f"error: the runs in {out} (e.g. {out / 'baseline' / 'seed0'}) were trained on other")
    assert "make clean-demo" in errors
    assert {p: sha256_file(p) for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--runs", "baseline,teacher"], "unknown demo run 'teacher'"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["SOLVER.LR"], "config overrides come in KEY VALUE pairs"),
        (["SEED", "3"], "sets SEED, which the study sets for every run"),
        (["NUM_THREADS", "2"], "set the threads of every run with --threads"),
        (["--data-seed", "1"], "was generated with other settings"),
    ],
)
def test_bad_input_is_one_line_and_trains_nothing(demo, tmp_path, extra, message):
    out = tmp_path / "out"
    code, printed, errors = run_demo_command("--data", str(demo["data"]), "--out", str(out), *REDUCED, *extra)
    assert code == 2 and errors.startswith("error: ") and message in errors and errors.count("\n") == 1
    assert not list(out.glob("*/seed*"))
