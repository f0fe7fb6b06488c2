"""tools/report.py and the results table: grouping by config minus seed, mean ± sd, paired t intervals, --paper."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from tool_modules import load_tool

from makd.analysis.published import dataset_of, normalise_student, published_for
from makd.analysis.results_table import TableError, summarise
from makd.analysis.run_folders import RunFolderError, group_by_condition, read_run
from makd.config import get_cfg

REPO = Path(__file__).resolve().parents[1]
T_975_2DF = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (statistical tables)


report = load_tool("report")


def write_run(
    folder: Path, seed: int, last: float, best: float, name: str = "", val: float | None = None, **overrides
) -> Path:
    """A finished run folder as tools/our_train.py leaves it: resolved config.yaml and summary.json."""
    cfg = get_cfg()
    cfg.SEED, cfg.OUTPUT_DIR, cfg.EXPERIMENT.NAME = seed, str(folder), name
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(cfg.dump())
    summary = {"test_top1_last": last, "test_top1_best": best, "seed": seed, "best_epoch": 3}
    if val is not None:
        summary.update(val_top1_best=90.0, test_top1_at_best_val=val, best_selected_on="val")
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def two_conditions(tmp_path):
    for seed, (b, m) in enumerate([(50.0, 53.0), (52.0, 56.0), (54.0, 55.0)]):
        write_run(tmp_path / f"base_s{seed}", seed, b, b + 1, "base", DISTILLER__TYPE="NONE")
        write_run(tmp_path / f"makd_s{seed}", seed, m, m + 2, "makd", DISTILLER__TYPE="MaKD")
    return tmp_path


def test_groups_runs_that_differ_only_in_seed_and_computes_paired_interval(two_conditions):
    runs = [read_run(p) for p in sorted(two_conditions.iterdir())]
    groups = group_by_condition(runs)
    assert list(groups) == ["base", "makd"] and [r.seed for r in groups["makd"]] == [0, 1, 2]
    rows, reference = summarise(groups, "base")
    base, makd = rows
    assert reference == "base" and base.diff_last is None
    assert base.last.mean == pytest.approx(52.0) and base.last.sd == pytest.approx(2.0)
    # differences 3, 4, 1: mean 8/3, sd sqrt(7/3), half width t * sd / sqrt(3)
    half = T_975_2DF * math.sqrt(7 / 3) / math.sqrt(3)
    assert makd.diff_last.mean == pytest.approx(8 / 3)
    assert (makd.diff_last.low, makd.diff_last.high) == (pytest.approx(8 / 3 - half), pytest.approx(8 / 3 + half))
    assert makd.diff_best.mean == pytest.approx(8 / 3 + 1)  # best = last + 2 vs last + 1
    assert makd.best_selected_on == "test"


def test_cli_writes_markdown_and_csv(two_conditions, tmp_path, capsys):
    out = tmp_path / "report"
    assert report.main([str(two_conditions), "--reference", "base", "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    assert markdown == capsys.readouterr().out
    assert "| makd | 3 | 0,1,2 | 54.67 ± 1.53 |" in markdown
    assert "+2.67 [-1.13, +6.46]" in markdown
    assert "best test top-1 (chosen on test)" in markdown and "optimistic" in markdown
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["condition"] for r in rows] == ["base", "makd"]
    assert float(rows[1]["diff_last_ci_low"]) == pytest.approx(8 / 3 - T_975_2DF * math.sqrt(7 / 9), abs=1e-3)
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 6


def test_validation_selected_best_is_used_when_present(tmp_path):
    write_run(tmp_path / "a", 0, 60.0, 70.0, "a", val=65.0)
    write_run(tmp_path / "b", 1, 62.0, 72.0, "a", val=61.0)
    rows, _ = summarise(group_by_condition([read_run(tmp_path / "a"), read_run(tmp_path / "b")]))
    assert rows[0].best.mean == pytest.approx(63.0) and rows[0].best_selected_on == "val"


def test_unnamed_groups_are_named_by_their_differing_keys(tmp_path):
    write_run(tmp_path / "r1", 0, 50.0, 51.0, MaKD__TARGETS="random")
    write_run(tmp_path / "r2", 0, 55.0, 56.0, MaKD__TARGETS="teacher")
    write_run(tmp_path / "r3", 1, 57.0, 58.0, MaKD__TARGETS="teacher")
    groups = group_by_condition([read_run(tmp_path / n) for n in ("r1", "r2", "r3")])
    assert list(groups) == ["MaKD.TARGETS=random", "MaKD.TARGETS=teacher"]
    rows, _ = summarise(groups)
    assert rows[1].diff_last.n == 1 and math.isnan(rows[1].diff_last.low)  # one shared seed: no interval


def test_same_config_and_seed_twice_is_refused(tmp_path):
    write_run(tmp_path / "x", 0, 50.0, 51.0, "x")
    write_run(tmp_path / "y", 0, 52.0, 53.0, "x")
    with pytest.raises(RunFolderError, match="same config and seed 0"):
        group_by_condition([read_run(tmp_path / "x"), read_run(tmp_path / "y")])


def test_unfinished_run_is_an_error_unless_skipped(two_conditions, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(get_cfg().dump())
    assert report.main([str(two_conditions)]) == 2
    assert "not finished" in capsys.readouterr().err
    assert report.main([str(two_conditions), "--skip-unfinished"]) == 0
    assert "Skipped unfinished" in capsys.readouterr().out
    assert report.main([str(two_conditions), "--skip-unfinished", "--reference", "nope"]) == 2
    assert "reference condition 'nope'" in capsys.readouterr().err
    with pytest.raises(TableError):
        summarise({})


def test_paper_numbers_sit_beside_matching_dataset_and_student(tmp_path, capsys):
    for seed in (0, 1):
        write_run(
            tmp_path / f"b{seed}",
            seed,
            70.0 + seed,
            71.0,
            "pets_r18_base",
            DATASET__TYPE="oxford_pets",
            DISTILLER__STUDENT="ResNet18",
            DISTILLER__TYPE="NONE",
        )
    assert report.main([str(tmp_path), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "| pets_r18_base | oxford_pets | resnet18 | 70.50 ± 0.71 |" in out
    assert "makd_paper: CE baseline 77.07; makd_paper: MaKD 82.24" in out
    assert "lavid_paper: CE only 77.57; lavid_paper: KD (ResNet50 teacher) 79.32" in out
    assert "arXiv 2501.13341" in out and "arXiv 2606.27527" in out and "no published numbers" not in out


def test_paper_says_why_no_published_number_matches(tmp_path, capsys):
    write_run(tmp_path / "pets8", 0, 60.0, 61.0, "pets_r8", DATASET__TYPE="oxford_pets", DISTILLER__STUDENT="resnet8")
    write_run(tmp_path / "mine", 0, 50.0, 51.0, "mine", DATASET__TRAIN_IMAGE_PATH="data/mine/train")
    assert report.main([str(tmp_path / "pets8"), "--paper"]) == 0
    assert (
        "--paper: no published numbers match these runs: oxford_pets is published for efficientnet, mobilenetv1, "
        "resnet18, resnet34, not for resnet8." in capsys.readouterr().out
    )
    assert report.main([str(tmp_path), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "--paper: no published numbers for mine: its dataset is none of the published ones (stanford_cars, " in out
    assert "--paper: no published numbers for pets_r8: oxford_pets is published for" in out
    assert report.main([str(tmp_path / "mine"), "--paper", "--csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("condition,") and "no published numbers match these runs" in captured.err
    assert report.main([str(tmp_path / "mine")]) == 0
    assert "--paper" not in capsys.readouterr().out  # not asked, not said


def test_dataset_and_student_matching():
    assert dataset_of({"DATASET.TYPE": "image_folder", "DATASET.TRAIN_IMAGE_PATH": "./data/CUB_200_2011/images"}) == (
        "cub200"
    )
    assert dataset_of({"DATASET.TYPE": "fgvc_aircraft"}) == "fgvc_aircraft"
    assert dataset_of({"DATASET.TYPE": "demo", "EXPERIMENT.NAME": "demo_makd"}) is None
    assert normalise_student("EfficientNet-B0") == "efficientnet" and normalise_student("torchvision:resnet34") == (
        "resnet34"
    )
    _, _, figures = published_for({"DATASET.TYPE": "cub200", "DISTILLER.STUDENT": "MobileNetV1"})
    assert {(f.source, f.method, f.top1) for f in figures} == {
        ("makd_paper", "baseline", 58.85),
        ("makd_paper", "makd", 63.41),
    }
