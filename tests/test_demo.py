"""The built-in demo: deterministic synthetic data, a simulated teacher that follows the truth, and
tools/make_demo.py run for real on a tiny generated set (tools/demo.py: tests/test_demo_command.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tool_modules import load_tool

from makd.config.defaults import load_cfg
from makd.data.build import build_data
from makd.demo.classification import (
    OCCLUSION_PROB,
    QUESTIONS,
    TEACHER_MARGIN,
    UNRELIABLE_QUESTIONS,
    class_level_mask,
    demo_classes,
    demo_questions,
    generate_demo,
    read_demo_summary,
    simulate_teacher,
)
from makd.errors import ConfigError
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar, sha256_file
from makd.formats.image_ids import image_id, list_image_files
from makd.formats.questions import question_problem, read_questions

REPO = Path(__file__).resolve().parents[1]
SMALL = {"train_per_class": 6, "test_per_class": 3}


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    generate_demo(out, seed=0, **SMALL)
    return out


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory) -> dict[str, Path]:
    """Same images (seed 3, 20 per class) answered by a quiet, a default and a noisy teacher."""
    base = tmp_path_factory.mktemp("teachers")
    runs = {"quiet": 0.5, "default": 1.0, "noisy": 3.0}
    for name, noise in runs.items():
        generate_demo(base / name, seed=3, train_per_class=20, test_per_class=1, teacher_noise=noise)
    return {name: base / name for name in runs}


def load_rows(root: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, list[str]]:
    teacher = read_aspect_file(root / f"aspects_{split}.json")
    truth = read_aspect_file(root / f"truth_{split}.json")
    assert teacher.ids == truth.ids
    return teacher.values.astype(np.float64), truth.values.astype(np.float64), teacher.ids


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


# ----------------------------------------------------------------------------- layout and files
def test_layout_counts_sizes_and_ids(demo):
    classes = [c.name for c in demo_classes()]
    assert len(classes) == 16 and len(set(classes)) == 16
    for split, per_class in (("train", 6), ("test", 3)):
        assert sorted(p.name for p in (demo / split).iterdir()) == classes
        files = list_image_files(demo / split)
        assert len(files) == 16 * per_class
        for name in classes:
            assert len(list((demo / split / name).glob("*.png"))) == per_class
        for path in files[:: max(1, len(files) // 10)]:
            with Image.open(path) as image:
                assert image.format == "PNG" and image.mode == "RGB" and image.size == (32, 32)
                pixels = np.asarray(image)
            assert pixels.std() > 10  # a drawn picture, not a flat colour
        stems = {p.stem for p in files}
        assert len(stems) == len(files) and all(s.startswith(f"{split}_") for s in stems)
        teacher = read_aspect_file(demo / f"aspects_{split}.json", expected_aspects=16)
        assert teacher.ids == [image_id(p, demo / split) for p in files]  # one row per image, same ids
        assert teacher.values.min() >= 0.0 and teacher.values.max() <= 1.0
        truth = read_aspect_file(demo / f"truth_{split}.json", expected_aspects=16)
        assert set(np.unique(truth.values)) <= {0.0, 1.0}
    summary = read_demo_summary(demo)
    assert (summary["num_train"], summary["num_test"], summary["num_classes"], summary["num_questions"]) == (
        96,
        48,
        16,
        16,
    )


def test_image_size_is_configurable(tmp_path):
    summary = generate_demo(tmp_path / "d48", image_size=48, train_per_class=1, test_per_class=1)
    assert summary["image_size"] == 48
    with Image.open(next((tmp_path / "d48" / "train").rglob("*.png"))) as image:
        assert image.size == (48, 48) and image.mode == "RGB"


def test_questions_are_valid_aspects_and_sidecars_name_the_simulation(demo):
    classes = [c.name for c in demo_classes()]
    questions = read_questions(demo / "questions.txt", expected_count=16)
    assert questions == demo_questions()
    assert all(question_problem(q, classes) is None for q in questions)
    assert set(UNRELIABLE_QUESTIONS) <= set(questions)
    meta = read_sidecar(demo / "aspects_train.json")
    assert meta["teacher"].startswith("simulated") and meta["questions"] == questions
    assert (meta["noise"], meta["calibration"], meta["margin"], meta["seed"]) == (1.0, 1.0, TEACHER_MARGIN, 0)
    assert read_sidecar(demo / "truth_test.json")["teacher"].startswith("none")
    assert read_sidecar(demo / "questions.txt")["classes"] == classes
    for name in ("aspects_train", "aspects_test", "truth_train", "truth_test"):
        assert read_sidecar(demo / f"{name}.json")["questions_sha256"] == sha256_file(demo / "questions.txt")


def test_an_edited_questions_file_is_caught_against_the_demo_aspect_file(demo, tmp_path):
    def demo_cfg(questions: Path):
        paths = {
            "TRAIN_IMAGE_PATH": demo / "train",
            "TEST_IMAGE_PATH": demo / "test",
            "QUESTIONS": questions,
            "ASPECT_JSON": demo / "aspects_train.json",
            "TEST_ASPECT_JSON": demo / "aspects_test.json",
        }
        opts = [item for key, value in paths.items() for item in (f"DATASET.{key}", str(value))]
        return load_cfg(str(REPO / "configs/demo/makd.yaml"), [*opts, "DATASET.CACHE_IMAGES", "False"])

    assert build_data(demo_cfg(demo / "questions.txt")).num_aspects == 16
    edited = tmp_path / "questions.txt"
    questions = read_questions(demo / "questions.txt")
    edited.write_text("".join(q.replace("red", "crimson") + "\n" for q in questions))  # still 16 questions
    with pytest.raises(ConfigError) as caught:
        build_data(demo_cfg(edited))
    assert str(caught.value) == (
        f"DATASET.QUESTIONS {edited} (sha256 {sha256_file(edited)[:12]}) is not the questions file "
        f"{demo / 'aspects_train.json'} was made from (its sidecar aspects_train.json.meta.json records sha256 "
        f"{sha256_file(demo / 'questions.txt')[:12]}); point DATASET.QUESTIONS at that file, or re-run stage 2 "
        "with the edited questions"
    )


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_another_seed_does_not(demo, tmp_path):
    again = tmp_path / "again"
    generate_demo(again, seed=0, **SMALL)
    assert file_hashes(again) == file_hashes(demo)  # every PNG, JSON and sidecar

    other = tmp_path / "other"
    generate_demo(other, seed=1, **SMALL)
    first, second = file_hashes(demo), file_hashes(other)
    assert first.keys() == second.keys()
    pngs = [k for k in first if k.endswith(".png")]
    assert sum(first[k] != second[k] for k in pngs) == len(pngs)
    assert first["aspects_train.json"] != second["aspects_train.json"]


def test_teacher_settings_change_the_answers_but_not_the_images(demo, tmp_path):
    noisy = tmp_path / "noisy"
    generate_demo(noisy, seed=0, teacher_noise=2.5, teacher_calibration=0.5, **SMALL)
    first, second = file_hashes(demo), file_hashes(noisy)
    assert {k: v for k, v in first.items() if k.endswith(".png")} == {
        k: v for k, v in second.items() if k.endswith(".png")
    }
    assert first["truth_train.json"] == second["truth_train.json"]
    assert first["aspects_train.json"] != second["aspects_train.json"]


# ----------------------------------------------------------------------------- the simulated teacher
def test_teacher_formula_without_noise():
    evidence = np.array([[1.0, -1.0, 0.0, 0.5]])
    p = simulate_teacher(evidence, np.random.default_rng(0), noise=0.0, calibration=2.0, noise_factors=np.ones(4))
    expected = 1 / (1 + np.exp(-2.0 * TEACHER_MARGIN * evidence))
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p[0, 0] == pytest.approx(0.997527, abs=1e-6) and p[0, 2] == 0.5


def test_teacher_follows_the_truth_and_degrades_with_noise(teacher_runs):
    questions = demo_questions()
    unreliable = np.array([q in UNRELIABLE_QUESTIONS for q in questions])
    accuracy, aucs = {}, {}
    for name, root in teacher_runs.items():
        p, truth, _ = load_rows(root)
        agree = (p > 0.5) == (truth > 0.5)
        accuracy[name] = agree.mean(axis=0)
        aucs[name] = np.array([auc(p[:, q], truth[:, q]) for q in range(len(questions))])
    # 320 images; at noise 1 a clear answer flips when z < -3 (0.13%), an unreliable one when z < -1 (16%).
    reliable_binary = ~unreliable & class_level_mask()
    assert accuracy["default"][reliable_binary].min() >= 0.99
    assert aucs["default"][~unreliable].min() >= 0.97
    assert 0.7 <= accuracy["default"][unreliable].mean() <= 0.92
    assert aucs["quiet"].mean() > aucs["default"].mean() > aucs["noisy"].mean()
    assert accuracy["noisy"].mean() < accuracy["default"].mean() - 0.05
    assert 0.5 < accuracy["noisy"].mean() < 0.9  # noisy, but still informative


def test_calibration_sharpens_without_changing_answers(teacher_runs, tmp_path):
    root = tmp_path / "overconfident"
    generate_demo(root, seed=3, train_per_class=20, test_per_class=1, teacher_calibration=2.0)
    p1, _, ids1 = load_rows(teacher_runs["default"])
    p2, _, ids2 = load_rows(root)
    assert ids1 == ids2
    np.testing.assert_array_equal(p1 > 0.5, p2 > 0.5)  # same noise draw, logits scaled: same side of 0.5
    assert np.abs(p2 - 0.5).mean() > np.abs(p1 - 0.5).mean() + 0.02
    # Logits double exactly (checked in float64 from the JSON text, away from saturation).
    raw1 = json.loads((teacher_runs["default"] / "aspects_train.json").read_text())
    raw2 = json.loads((root / "aspects_train.json").read_text())
    q1, q2 = np.array([raw1[i] for i in ids1]), np.array([raw2[i] for i in ids1])
    usable = np.minimum(q2, 1 - q2) > 1e-9
    assert usable.mean() > 0.95
    logit1, logit2 = np.log(q1[usable] / (1 - q1[usable])), np.log(q2[usable] / (1 - q2[usable]))
    np.testing.assert_allclose(logit2, 2.0 * logit1, rtol=1e-6, atol=1e-6)


def test_class_level_answers_are_fixed_by_the_class_and_image_level_ones_vary(teacher_runs):
    _, truth, ids = load_rows(teacher_runs["default"])
    labels = np.array([i.split("/")[0] for i in ids])
    class_level = class_level_mask()
    assert class_level.sum() >= 8 and (~class_level).sum() >= 4
    for name in np.unique(labels):
        rows = truth[labels == name]
        assert (rows[:, class_level] == rows[0, class_level]).all(), name
    varying = [(truth[labels == name][:, ~class_level].std(axis=0) > 0) for name in np.unique(labels)]
    assert np.mean(varying, axis=0).min() >= 0.8  # every image-level question varies inside most classes
    yes_rate = dict(zip(np.array(demo_questions())[~class_level], truth[:, ~class_level].mean(axis=0)))
    assert min(yes_rate.values()) > 0.15 and max(yes_rate.values()) < 0.85  # neither always yes nor always no
    assert yes_rate["Is the main shape round?"] == pytest.approx(0.25, abs=0.06)  # 1 outline of 4
    assert yes_rate["Is part of the main shape hidden behind a bar?"] == pytest.approx(OCCLUSION_PROB, abs=0.06)


def test_classes_are_fine_grained_combinations():
    """16 classes = every (colour family, texture) pair: each class has 3 neighbours differing only in colour
    and 3 differing only in texture, and no single attribute value identifies a class."""
    classes = demo_classes()
    pairs = {(c.colour, c.texture) for c in classes}
    assert len(pairs) == len(classes) == 16
    for c in classes:
        same_texture = [p for p in pairs if p[1] == c.texture and p[0] != c.colour]
        same_colour = [p for p in pairs if p[0] == c.colour and p[1] != c.texture]
        assert len(same_texture) == 3 and len(same_colour) == 3, c.name
    _, kinds, tests = zip(*QUESTIONS)
    for kind, test in zip(kinds, tests):
        if kind == "class":
            attribute, yes_values = test
            assert sum(getattr(c, attribute) in yes_values for c in classes) >= 4, test


# ----------------------------------------------------------------------------- errors and commands
def test_refuses_to_overwrite_and_bad_arguments(demo, tmp_path):
    before = file_hashes(demo)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_demo(demo, **SMALL)
    assert file_hashes(demo) == before  # nothing lost
    with pytest.raises(ValueError, match="image_size 8"):
        generate_demo(tmp_path / "x", image_size=8)
    with pytest.raises(ValueError, match="teacher_calibration 0"):
        generate_demo(tmp_path / "x", teacher_calibration=0)
    assert not (tmp_path / "x").exists()


def test_make_demo_command(tmp_path, capsys):
    make_demo = load_tool("make_demo")
    out = tmp_path / "cmd"
    assert make_demo.main(["--out", str(out), "--train-per-class", "2", "--test-per-class", "1", "--seed", "5"]) == 0
    assert "32 train + 16 test images of 16 classes" in capsys.readouterr().out
    assert read_demo_summary(out)["seed"] == 5
    assert make_demo.main(["--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert make_demo.main(["--out", str(out), "--overwrite", "--train-per-class", "1", "--test-per-class", "1"]) == 0
    assert len(list_image_files(out / "train")) == 16
