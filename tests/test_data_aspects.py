"""The id join of an index with an aspect file, and the MaKD.TARGETS controls."""

from __future__ import annotations

import numpy as np
import pytest

from makd.data.aspect_targets import make_targets
from makd.data.image_index import ImageIndex
from makd.errors import ConfigError
from makd.formats.aspect_files import AspectTable
from makd.formats.errors import ArtifactError
from makd.formats.target_sources.per_image import join_aspects


def index_of(ids, labels=None):
    labels = labels or [0] * len(ids)
    return ImageIndex(
        list(ids), list(labels), ["a", "b", "c"], "test index", "/data/train", [f"/data/train/{i}.png" for i in ids]
    )


def table_of(rows: dict) -> AspectTable:
    return AspectTable(list(rows), np.array(list(rows.values()), dtype=np.float32), "/files/aspects.json", "abc")


def test_join_follows_the_index_order():
    table = table_of({"b/2": [0.2, 0.3], "a/1": [0.1, 0.9], "c/3": [1.0, 0.0]})
    index, targets = join_aspects(index_of(["a/1", "b/2", "c/3"]), table)
    assert index.ids == ["a/1", "b/2", "c/3"] and targets.dtype == np.float32 and targets.shape == (3, 2)
    assert (targets == np.array([[0.1, 0.9], [0.2, 0.3], [1.0, 0.0]], dtype=np.float32)).all()


def test_missing_rows_error_names_count_file_and_first_ids():
    table = table_of({"k0": [0.5], "k2": [0.5]})
    ids = ["k0", "m1", "k2", "m3", "m4", "m5"]
    with pytest.raises(ArtifactError) as caught:
        join_aspects(index_of(ids), table)
    assert str(caught.value) == (
        "4 training images have no row in /files/aspects.json (first: m1, m3, m4); "
        "run stage 2 on them or set DATASET.MISSING_ASPECTS drop"
    )


def test_drop_and_nan_policies():
    table = table_of({"x": [0.25, 0.75], "z": [1.0, 1.0]})
    index = index_of(["x", "y", "z"], [0, 1, 2])
    kept, targets = join_aspects(index, table, "drop")
    assert kept.ids == ["x", "z"] and kept.labels == [0, 2] and kept.paths == ["/data/train/x.png", "/data/train/z.png"]
    assert targets.tolist() == [[0.25, 0.75], [1.0, 1.0]]
    same, with_nan = join_aspects(index, table, "nan")
    assert same.ids == ["x", "y", "z"] and np.isnan(with_nan[1]).all() and with_nan[2].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="DATASET.MISSING_ASPECTS 'skip' is unknown; use one of error, drop"):
        join_aspects(index, table, "skip")


def test_no_matching_id_at_all_hints_at_the_id_rule():
    table = table_of({"cat_0_1": [0.5], "cat_0_2": [0.5]})
    for policy in ("error", "drop"):
        with pytest.raises(
            ArtifactError,
            match=r"no id matches: the file's ids look like 'cat_0_1', 'cat_0_2', these "
            r"images' like 'cat/img_1' \(run stage 2 on /data/train\)",
        ):
            join_aspects(index_of(["cat/img_1"]), table, policy)


def test_test_images_without_rows_are_told_what_applies_to_them():
    table = table_of({"cat_0_1": [0.5]})
    with pytest.raises(ArtifactError) as caught:
        join_aspects(index_of(["dog_1_0", "dog_1_1"]), table, "nan", role="test")
    message = str(caught.value)
    assert message.startswith("2 test images have no row in /files/aspects.json (first: dog_1_0, dog_1_1); ")
    assert "DATASET.MISSING_ASPECTS" not in message  # it governs training images only
    assert "run stage 2 on the test images (DATASET.TEST_IMAGE_PATH) and point DATASET.TEST_ASPECT_JSON" in message
    assert "or set DATASET.TEST_ASPECT_JSON '' to evaluate without the aspect metrics" in message
    with pytest.raises(ArtifactError) as caught:
        join_aspects(index_of(["dog_1_0"]), table, "nan", role="validation")
    assert "MISSING_ASPECTS" not in str(caught.value) and "validation images are carved from" in str(caught.value)


@pytest.fixture
def teacher():
    rng = np.random.default_rng(1)
    return rng.uniform(0.05, 0.95, size=(9, 4)).astype(np.float32), [0, 1, 2, 0, 1, 2, 0, 0, 1]


def test_teacher_mode_is_the_file(teacher):
    values, labels = teacher
    out = make_targets("teacher", values, labels, seed=0)
    assert (out == values).all() and out is not values


def test_random_mode(teacher):
    values, labels = teacher
    out = make_targets("random", values, labels, seed=3)
    assert out.shape == values.shape and out.dtype == np.float32
    assert (out >= 0).all() and (out < 1).all()
    assert (make_targets("random", values, labels, seed=3) == out).all()  # fixed for the run
    assert not np.allclose(make_targets("random", values, labels, seed=4), out)
    assert np.abs(out - values).mean() > 0.1  # not the teacher
    big = make_targets("random", np.zeros((2000, 50), np.float32), [0] * 2000, seed=0)
    assert big.mean() == pytest.approx(0.5, abs=0.01) and big.std() == pytest.approx(np.sqrt(1 / 12), abs=0.01)


def test_shuffled_mode_permutes_rows(teacher):
    values, labels = teacher
    out = make_targets("shuffled", values, labels, seed=0)
    assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, values.tolist()))  # same multiset of rows
    assert not (out == values).all(axis=1).all()  # but not in place
    assert (make_targets("shuffled", values, labels, seed=0) == out).all()


def test_class_mean_mode(teacher):
    values, labels = teacher
    out = make_targets("class_mean", values, labels, seed=0)
    labels = np.array(labels)
    for c in range(3):
        rows = out[labels == c]
        assert (rows == rows[0]).all()
        assert rows[0] == pytest.approx(values[labels == c].mean(axis=0), abs=1e-6)
    assert out[labels == 0][0, 0] == pytest.approx((values[0, 0] + values[3, 0] + values[6, 0] + values[7, 0]) / 4)


def test_controls_reject_bad_input(teacher):
    values, labels = teacher
    with pytest.raises(ValueError, match="MaKD.TARGETS 'noise' is unknown"):
        make_targets("noise", values, labels, seed=0)
    with pytest.raises(ValueError, match=r"\[N, Q\] with N = 8"):
        make_targets("teacher", values, labels[:8], seed=0)
    values[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN rows"):
        make_targets("class_mean", values, labels, seed=0)
