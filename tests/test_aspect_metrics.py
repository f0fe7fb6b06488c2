"""Per-question aspect metrics against values worked out by hand on tiny arrays, and the strict-JSON writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from makd.analysis.aspect_metrics import (
    AspectMetricsError,
    aspect_metrics,
    aspect_scalars,
    entry_label,
    entry_tag,
    mutual_information_bits,
    write_aspect_metrics,
)
from makd.engine.metrics import MIN_AUC_COUNT
from makd.formats.question_numbers import AspectColumns

# 4 images, 2 classes, 2 questions: q1 answers the class exactly, q2 is independent of it (q0/q1 below: positions).
TEACHER = np.array([[0.9, 0.2], [0.7, 0.6], [0.1, 0.6], [0.3, 0.4]])
STUDENT = np.array([[0.8, 0.3], [0.6, 0.5], [0.2, 0.7], [0.4, 0.6]])
LABELS = np.array([0, 0, 1, 1])


def test_per_question_values_match_hand_computation():
    questions = ["Is it red?", "Is it big?"]
    result = aspect_metrics(TEACHER, STUDENT, LABELS, num_classes=2, questions=questions, min_count=1)
    q0, q1 = result["questions"]
    assert (result["num_images"], result["num_aspects"], result["num_classes"]) == (4, 2, 2)
    assert q0["question"] == "Is it red?"
    assert (q0["number"], q0["label"], q1["number"], q1["label"]) == (1, "q1", 2, "q2")  # counted from 1
    # q0: mean (0.9+0.7+0.1+0.3)/4; class sds 0.1 and 0.1; answers yes,yes,no,no = the class: 1 bit.
    assert q0["teacher_mean"] == pytest.approx(0.5)
    assert q0["teacher_within_class_sd"] == pytest.approx(0.1)
    assert q0["yes_rate"] == pytest.approx(0.5)
    assert q0["mutual_information_bits"] == pytest.approx(1.0)
    assert q0["student_auc"] == pytest.approx(1.0)  # 0.8, 0.6 above 0.2, 0.4
    assert q0["student_mae"] == pytest.approx((0.1 + 0.1 + 0.1 + 0.1) / 4)
    # q1: mean 1.8/4; class sds 0.2 (0.2, 0.6) and 0.1 (0.6, 0.4); answers no,yes,yes,no: independent of class.
    assert q1["teacher_mean"] == pytest.approx(0.45)
    assert q1["teacher_within_class_sd"] == pytest.approx(0.15)
    assert q1["mutual_information_bits"] == pytest.approx(0.0, abs=1e-12)
    # positives 0.5, 0.7 vs negatives 0.3, 0.6: 3 of 4 pairs ordered right.
    assert q1["student_auc"] == pytest.approx(0.75)
    assert q1["student_mae"] == pytest.approx((0.1 + 0.1 + 0.1 + 0.2) / 4)
    assert result["mean"]["student_auc"] == pytest.approx(0.875)
    assert result["mean"]["mutual_information_bits"] == pytest.approx(0.5)


def test_selected_questions_keep_their_numbers_and_old_files_read_their_index():
    columns = AspectColumns((4, 6, 6), (None, 0, 1), 10)  # q5, and the two options of q7
    result = aspect_metrics(TEACHER[:, [0, 1, 1]], None, LABELS, 2, columns=columns)
    assert [(q["number"], q["label"]) for q in result["questions"]] == [(5, "q5"), (7, "q7A"), (7, "q7B")]
    assert [entry_tag(q) for q in result["questions"]] == ["q05", "q07A", "q07B"]
    assert set(aspect_scalars(result, "train")) >= {"train_aspect/teacher_mean/q05", "train_aspect/teacher_mean/q07B"}
    old = {"index": 0, "question": None, "teacher_mean": 0.5}  # aspect_metrics.json before 1-based numbers
    assert (entry_label(old), entry_tag({**old, "index": 11})) == ("q1", "q12")
    assert aspect_scalars({"questions": [old], "mean": {}}, "test") == {"test_aspect/teacher_mean/q01": 0.5}
    with pytest.raises(AspectMetricsError, match="3 numbered columns for 2 aspects"):
        aspect_metrics(TEACHER, None, LABELS, 2, columns=columns)


def test_mutual_information_partial_dependence():
    answers = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    labels = np.array([0, 0, 0, 1, 1, 1])
    # p(a, y) = 1/3 on the diagonal, 1/6 off it; marginals 1/2 each.
    expected = (2 / 3) * math.log2(4 / 3) + (1 / 3) * math.log2(2 / 3)
    assert mutual_information_bits(answers, labels, 2) == pytest.approx(expected)
    # an unused third class changes nothing
    assert mutual_information_bits(answers, labels, 3) == pytest.approx(expected)


def test_one_answer_only_gives_nan_auc_and_rows_with_nan_are_left_out():
    teacher = np.array([[0.9, 0.2], [0.8, 0.7], [np.nan, np.nan], [0.6, 0.1]])
    student = np.array([[0.5, 0.1], [0.4, 0.9], [0.3, 0.3], [0.2, 0.2]])
    result = aspect_metrics(teacher, student, np.array([0, 1, 1, 0]), num_classes=2, min_count=1)
    q0, q1 = result["questions"]
    assert result["num_images"] == 3
    assert math.isnan(q0["student_auc"])  # every teacher answer is yes
    assert q0["mutual_information_bits"] == pytest.approx(0.0)
    assert q1["student_auc"] == pytest.approx(1.0)
    assert result["mean"]["student_auc"] == pytest.approx(1.0)  # the NaN is left out of the mean
    assert q0["student_mae"] == pytest.approx((0.4 + 0.4 + 0.4) / 3)


def test_teacher_only_without_student_predictions():
    result = aspect_metrics(TEACHER, None, LABELS, num_classes=2)
    assert "student_auc" not in result["questions"][0] and "student_auc" not in result["mean"]
    assert result["questions"][0]["teacher_mean"] == pytest.approx(0.5)


def test_shape_mismatches_are_one_line_errors():
    with pytest.raises(AspectMetricsError, match="student_prob has shape"):
        aspect_metrics(TEACHER, STUDENT[:, :1], LABELS, 2)
    with pytest.raises(AspectMetricsError, match="labels must lie in"):
        aspect_metrics(TEACHER, None, np.array([0, 1, 2, 0]), 2)
    with pytest.raises(AspectMetricsError, match="3 questions for 2 aspects"):
        aspect_metrics(TEACHER, None, LABELS, 2, questions=["a?", "b?", "c?"])


def test_writer_is_strict_json_with_null_for_nan(tmp_path):
    teacher = np.array([[0.9], [0.8]])
    metrics = aspect_metrics(teacher, np.array([[0.1], [0.2]]), np.array([0, 1]), 2)
    path = tmp_path / "aspect_metrics.json"
    write_aspect_metrics(path, {"train": metrics}, epoch=3)

    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert loaded["epoch"] == 3
    assert loaded["splits"]["train"]["questions"][0]["student_auc"] is None
    assert loaded["splits"]["train"]["questions"][0]["student_mae"] == pytest.approx(0.7)
    assert not list(tmp_path.glob(".*.tmp"))


def test_tensorboard_scalars_skip_nan():
    scalars = aspect_scalars(aspect_metrics(TEACHER, STUDENT, LABELS, 2, min_count=1), "test")
    assert scalars["test_aspect/student_auc/q02"] == pytest.approx(0.75)  # the second question
    assert scalars["test_aspect/mutual_information_bits/mean"] == pytest.approx(0.5)
    nan_case = aspect_scalars(
        aspect_metrics(np.array([[0.9], [0.8]]), np.array([[0.1], [0.2]]), np.array([0, 1]), 2), "train"
    )
    assert "train_aspect/student_auc/q01" not in nan_case


def test_an_auc_below_the_minimum_count_is_left_out_of_the_mean_with_its_counts():
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 3
    teacher = np.stack([(labels == 0) * 0.8 + 0.1, (np.arange(60) < 4) * 0.8 + 0.1], axis=1)  # q1: 4 yes, 56 no
    student = np.clip(teacher + rng.normal(0, 0.05, teacher.shape), 0, 1)
    result = aspect_metrics(teacher, student, labels, num_classes=3)
    q0, q1 = result["questions"]
    assert result["auc_min_count"] == MIN_AUC_COUNT == 10 and result["student_auc_questions"] == 1
    assert (q0["teacher_yes_images"], q0["teacher_no_images"]) == (20, 40) and q0["student_auc"] == pytest.approx(1.0)
    assert (q1["teacher_yes_images"], q1["teacher_no_images"]) == (4, 56) and math.isnan(q1["student_auc"])
    assert result["mean"]["student_auc"] == pytest.approx(q0["student_auc"])  # q1 is in no mean
    assert "teacher_yes_images" not in result["mean"]  # counts are not metrics: no mean, no scalar
    scalars = aspect_scalars(result, "test")
    assert "test_aspect/student_auc/q02" not in scalars and not any("images" in tag for tag in scalars)


def test_plots_mark_a_question_without_an_auc_with_its_counts(tmp_path):
    from makd.analysis.plots import _auc_scope, _missing_label, agreement_bars

    labels = np.arange(60) % 3
    teacher = np.stack([(labels == 0) * 0.8 + 0.1, (np.arange(60) < 4) * 0.8 + 0.1], axis=1)
    metrics = aspect_metrics(teacher, teacher, labels, num_classes=3, questions=["Is it red?", "Is it rare?"])
    assert _missing_label(metrics["questions"][1], "student_auc", metrics) == "left out: 4 yes / 56 no (< 10 a side)"
    assert _auc_scope(metrics) == " (1 of 2 questions, >= 10 a side)"
    agreement_bars(metrics, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0
    assert json.loads((tmp_path / "bars.json").read_text())["questions"][1]["student_auc"] is None
