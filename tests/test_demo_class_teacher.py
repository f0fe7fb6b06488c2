"""The demo's simulated class-level teacher: answers from each class's generative rule, one row per class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from makd.demo.class_teacher import (
    CLASS_FILE,
    SPREAD_FILES,
    DemoClassTeacherError,
    expected_evidence,
    simulate_class_teacher,
    write_class_teacher,
)
from makd.demo.classification import (
    QUESTIONS,
    TEACHER_MARGIN,
    DemoArgumentError,
    class_level_mask,
    demo_classes,
    demo_questions,
    generate_demo,
)
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar
from tests.tool_modules import load_tool


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_noiseless_answers_are_the_class_rule():
    rows = simulate_class_teacher(0, noise=0.0, samples=8)
    assert list(rows) == [c.name for c in demo_classes()]
    fixed = class_level_mask()
    for cls in demo_classes():
        row = np.array(rows[cls.name])
        truth = np.array([1.0 if getattr(cls, test[0]) in test[1] else -1.0 for _, kind, test in QUESTIONS
                          if kind == "class"])  # fmt: skip
        np.testing.assert_allclose(row[fixed], sigmoid(TEACHER_MARGIN * truth), atol=1e-12)
    table = np.array(list(rows.values()))
    assert np.ptp(table[:, ~fixed], axis=0).max() == 0  # common random numbers: no spurious class signal


def test_image_level_expectations_are_the_base_rates():
    evidence = dict(zip(demo_questions(), expected_evidence(demo_classes()[5], 5, seed=0, samples=400)))
    # 2 * P(yes) - 1 for the binary facts; about 0 for the symmetric ramps (position, size, background)
    assert evidence["Is the main shape round?"] == pytest.approx(2 * 0.25 - 1, abs=0.12)  # one outline in four
    assert evidence["Does the main shape have pointed tips?"] == pytest.approx(0.0, abs=0.12)  # two in four
    assert evidence["Is part of the main shape hidden behind a bar?"] == pytest.approx(2 * 0.3 - 1, abs=0.12)
    assert evidence["Is there a second, smaller shape in the image?"] == pytest.approx(0.0, abs=0.12)
    assert evidence["Is the background dark?"] == pytest.approx(0.0, abs=0.12)


def test_expectation_is_over_renders_of_the_class():
    cls = demo_classes()[0]
    evidence = expected_evidence(cls, 0, seed=0, samples=8)
    assert evidence.shape == (len(QUESTIONS),) and np.all(np.abs(evidence) <= 1)
    assert np.all(np.abs(evidence[class_level_mask()]) == 1)


def test_noise_is_per_class_and_seeded():
    a = simulate_class_teacher(3, noise=1.0, samples=4)
    assert a == simulate_class_teacher(3, noise=1.0, samples=4)
    assert a != simulate_class_teacher(4, noise=1.0, samples=4)
    with pytest.raises(DemoArgumentError, match="calibration 0.0"):
        simulate_class_teacher(0, calibration=0.0)


def test_files_spread_one_row_per_class_with_a_stage2_like_sidecar(tmp_path):
    demo = tmp_path / "demo"
    generate_demo(demo, train_per_class=2, test_per_class=1, image_size=16)
    meta = write_class_teacher(demo, samples=4)
    rows = json.loads((demo / CLASS_FILE).read_text())
    assert list(rows) == [c.name for c in demo_classes()] and all(len(r) == 16 for r in rows.values())
    assert meta["level"] == "class" and meta["kind"] == "yes_no" and meta["questions"] == demo_questions()
    assert meta["cost"] == {"prompts_scored": 16 * 16, "prompt_tokens": None, "tokens_processed": None,
                            "seconds": None, "simulated": True}  # fmt: skip
    for split, name in SPREAD_FILES.items():
        table = read_aspect_file(demo / name)
        assert len(table.ids) == 16 * (2 if split == "train" else 1)
        for image, values in zip(table.ids, table.values):
            np.testing.assert_allclose(values, rows[image.split("/")[0]], atol=1e-6)  # float32 copies
        spread_meta = read_sidecar(demo / name)
        assert spread_meta["source"] == str((demo / CLASS_FILE).resolve())
    per_image = read_sidecar(demo / "aspects_train.json")["cost"]
    assert per_image["prompts_scored"] == 32 * 16 and per_image["simulated"]  # images x Q vs classes x Q
    with pytest.raises(DemoClassTeacherError, match="already exists"):
        write_class_teacher(demo)
    with pytest.raises(DemoClassTeacherError, match="holds no complete demo"):
        write_class_teacher(tmp_path / "nothing")


def test_make_demo_flag_writes_the_class_teacher(tmp_path, capsys):
    make_demo = load_tool("make_demo")
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--train-per-class", "1", "--test-per-class", "1", "--image-size", "16"]
    assert make_demo.main([*argv, "--class-teacher", "--class-teacher-noise", "0"]) == 0
    assert "class-level teacher" in capsys.readouterr().out
    rows = json.loads((out / CLASS_FILE).read_text())
    assert rows["red_striped"][demo_questions().index("Does the main shape have a striped texture?")] == pytest.approx(
        float(sigmoid(TEACHER_MARGIN))
    )
