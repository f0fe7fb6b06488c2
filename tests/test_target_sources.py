"""Target sources (makd.formats.target_sources): each kind recognised from its keys and shape, each file read once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_helpers import make_cfg, write_class_folders

from makd.data.build import build_data
from makd.data.image_index import ImageIndex
from makd.errors import ConfigError
from makd.formats.aspect_files import write_aspect_file
from makd.formats.errors import ArtifactError
from makd.formats.files import sha256_file
from makd.formats.questions import write_questions
from makd.formats.target_sources import ANY_KIND, CLASS_KINDS, open_source

CLASSES = ["ant", "bee", "cat"]


def index_of(ids: list[str], labels: list[int]) -> ImageIndex:
    return ImageIndex(ids, labels, CLASSES, "test", paths=[f"/x/{i}.png" for i in ids])


def _write(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_kinds_are_recognised_from_keys_and_shape(tmp_path):
    per_image = tmp_path / "images.json"
    write_aspect_file(per_image, {"ant/1": [0.1, 0.2], "bee/1": [0.3, 0.4]})
    per_class = _write(tmp_path / "classes.json", {"Ant": [0.1, 0.2], "BEE": [0.3, 0.4], "cats": [0.5, 0.6]})
    choice = _write(tmp_path / "choice.json", {c: [[0.5, 0.5], [0.2, 0.3, 0.5]] for c in CLASSES})
    kinds = {
        p.name: open_source(p, key="K", class_names=CLASSES, kinds=ANY_KIND).kind
        for p in (per_image, per_class, choice)
    }
    assert kinds == {"images.json": "per_image", "classes.json": "per_class", "choice.json": "multiple_choice"}
    source = open_source(choice, key="K", class_names=CLASSES, kinds=CLASS_KINDS)
    assert (source.num_aspects, source.num_questions) == (5, 2)
    kept, rows = source.join(index_of(["a", "b", "c"], [2, 0, 2]))
    assert kept.ids == ["a", "b", "c"] and rows.dtype == np.float32 and rows.shape == (3, 5)
    assert rows[1].tolist() == pytest.approx([0.5, 0.5, 0.2, 0.3, 0.5])
    # A per-class file's class without a row is named, whatever the missing-rows policy.
    partial = _write(tmp_path / "partial.json", {"ant": [0.1], "bee": [0.2]})
    with pytest.raises(ArtifactError, match=r"K .*partial.json: 1 class\(es\) of the dataset have no row: 'cat'"):
        open_source(partial, key="K", class_names=CLASSES, kinds=ANY_KIND).join(index_of(["a"], [0]), "drop")
    # Names the rules do not pair ("kitten" for "cat"): still a per-class file (most of its keys name classes), so
    # the message names the class, the closest unused row and the map option, not the images without a row.
    misnamed = _write(tmp_path / "misnamed.json", {"ant": [0.1], "bee": [0.2], "cat family": [0.3]})
    map_key = "DATASET.ASPECT_CLASS_MAP"
    source = open_source(misnamed, key="K", class_names=CLASSES, kinds=ANY_KIND, class_map_key=map_key)
    assert source.kind == "per_class"
    with pytest.raises(ArtifactError) as caught:
        source.join(index_of(["a", "b"], [0, 2]), "drop")
    assert str(caught.value) == (
        f"K {misnamed}: 1 class(es) of the dataset have no row: 'cat' (file has 'cat family'?) (names are compared "
        "case-folded, '_' as space, a final 's' ignored); pair each with its row in DATASET.ASPECT_CLASS_MAP (a JSON "
        "object {dataset class: file class} or lines `dataset class<TAB>file class`), or add the rows"
    )
    paired = open_source(misnamed, key="K", class_names=CLASSES, kinds=ANY_KIND, class_map={"cat": "cat family"})
    assert paired.join(index_of(["a", "b"], [0, 2]))[1][:, 0].tolist() == pytest.approx([0.1, 0.3])


def test_build_data_reads_the_aspect_file_once(tmp_path, monkeypatch):
    train_ids = write_class_folders(tmp_path / "train", {c: 2 for c in CLASSES})
    write_class_folders(tmp_path / "test", {c: 1 for c in CLASSES}, seed=1)
    questions = ["Is it red?", "Does it fly?"]
    write_questions(tmp_path / "q.txt", questions)
    aspects = tmp_path / "aspects.json"
    write_aspect_file(aspects, {i: [0.25, 0.75] for i in train_ids}, meta={"questions": questions})
    reads: list[str] = []
    original = Path.read_bytes

    def counting(self):
        reads.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    cfg = make_cfg(
        {
            "DATASET.TYPE": "image_folder",
            "DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"),
            "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test"),
            "DATASET.ASPECT_JSON": str(aspects),
            "DATASET.QUESTIONS": str(tmp_path / "q.txt"),
            "DATASET.VAL_FRACTION": 0.34,
            "DATASET.IMAGE_SIZE": 8,
            "DATASET.CHECK_IMAGES": False,
        }
    )
    data = build_data(cfg)
    assert data.aspect_sha256 == sha256_file(aspects) and data.num_aspects == 2
    assert reads.count("aspects.json") == 1 and reads.count("q.txt") == 1


# ----------------------------------------------------------------------------- mixing sources by question
IMAGE_QUESTIONS = ["Is it red?", "Does it have stripes?", "Is the background dark?"]
CLASS_QUESTIONS = ["Is the <object> usually kept indoors?", "Can the <object> fly?"]
CLASS_ROWS = {"Ant": [0.9, 0.1], "bee": [0.2, 0.8], "Cats": [0.6, 0.05]}  # names matched by class_key


def mixed_files(tmp_path: Path) -> dict:
    """3 classes x 4 training images, a per-image file (3 questions) and a per-class file (2), each with its
    questions file and a stage-2-like sidecar listing its questions."""
    train_ids = write_class_folders(tmp_path / "train", {c: 4 for c in CLASSES})
    write_class_folders(tmp_path / "test", {c: 2 for c in CLASSES}, seed=1)
    rng = np.random.default_rng(0)
    rows = {i: rng.uniform(0, 1, 3).round(4).tolist() for i in train_ids}
    write_questions(tmp_path / "image_q.txt", IMAGE_QUESTIONS)
    write_aspect_file(tmp_path / "per_image.json", rows, meta={"questions": IMAGE_QUESTIONS})
    _write(tmp_path / "per_class.json", CLASS_ROWS)
    (tmp_path / "per_class.json.meta.json").write_text(json.dumps({"questions": CLASS_QUESTIONS}))
    (tmp_path / "all_q.txt").write_text("\n".join(IMAGE_QUESTIONS + CLASS_QUESTIONS) + "\n")
    return {"rows": rows, "train_ids": train_ids}


def mixed_cfg(tmp_path: Path, sources: list[str], **settings):
    base = {
        "DATASET.TYPE": "image_folder",
        "DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"),
        "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test"),
        "DATASET.ASPECT_SOURCES": sources,
        "DATASET.IMAGE_SIZE": 8,
        "DATASET.CHECK_IMAGES": False,
    }
    base.update(settings)
    return make_cfg(base)


def test_mixed_targets_are_the_image_row_then_the_class_row_through_our_train(tmp_path):
    from tests.test_train_e2e import our_train

    files = mixed_files(tmp_path)
    image_file, class_file = tmp_path / "per_image.json", tmp_path / "per_class.json"
    config = tmp_path / "mixed.yaml"  # questions 1 and 3 per image, then both class-level questions
    config.write_text(
        f"""DATASET:
  TYPE: image_folder
  TRAIN_IMAGE_PATH: "{tmp_path / "train"}"
  TEST_IMAGE_PATH: "{tmp_path / "test"}"
  ASPECT_SOURCES: ["{image_file}:1,3", "{class_file}"]
  NUM_WORKERS: 0
DISTILLER:
  TYPE: MaKD
  STUDENT: resnet8x4
LOG:
  WANDB: False
""",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    args = [str(config), "DATASET.IMAGE_SIZE", "16", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "6",
            "SOLVER.LR", "0.01", "OUTPUT_DIR", str(out)]  # fmt: skip
    assert our_train.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_aspects"] == 4 and summary["num_train_images"] == 12
    parts = summary["aspect_sources"]
    assert [(p["kind"], p["path"], p["questions"], p["target_columns"]) for p in parts] == [
        ("per_image", str(image_file), [1, 3], [0, 2]),
        ("per_class", str(class_file), [1, 2], [2, 4]),
    ]
    assert parts[0]["sha256"] == sha256_file(image_file) and parts[1]["sidecar"] == f"{class_file}.meta.json"
    assert parts[1]["classes"] == {"cat": "Cats"} and parts[1]["unused_file_classes"] == []  # pairs by a final "s"
    # The run's own resolved config builds the same targets: the per-image row's columns, then the class's row.
    from makd.config import load_cfg

    data = build_data(load_cfg(str(out / "config.yaml"), ["DATASET.CHECK_IMAGES", "False"]))
    by_name = {"ant": CLASS_ROWS["Ant"], "bee": CLASS_ROWS["bee"], "cat": CLASS_ROWS["Cats"]}
    targets = data.train.targets.numpy()
    for k, (image, label) in enumerate(zip(data.train.index.ids, data.train.labels)):
        row = files["rows"][image]
        expected = [row[0], row[2], *by_name[CLASSES[label]]]
        assert targets[k].tolist() == pytest.approx(expected, abs=1e-6), image


def test_mixed_questions_file_is_the_entries_questions_in_order(tmp_path):
    mixed_files(tmp_path)
    sources = [str(tmp_path / "per_image.json"), str(tmp_path / "per_class.json")]
    data = build_data(mixed_cfg(tmp_path, sources, **{"DATASET.QUESTIONS": str(tmp_path / "all_q.txt")}))
    assert data.num_aspects == 5 and data.aspect_path == " + ".join(sources)
    (tmp_path / "swapped.txt").write_text("\n".join(CLASS_QUESTIONS + IMAGE_QUESTIONS) + "\n")
    with pytest.raises(ConfigError, match=r"swapped.txt:1: 'Is the <object> usually kept indoors\?' is not question 1"):
        build_data(mixed_cfg(tmp_path, sources, **{"DATASET.QUESTIONS": str(tmp_path / "swapped.txt")}))
    with pytest.raises(ConfigError, match=r"image_q.txt holds 3 questions but DATASET.ASPECT_SOURCES takes 5 \(3 from"):
        build_data(mixed_cfg(tmp_path, sources, **{"DATASET.QUESTIONS": str(tmp_path / "image_q.txt")}))


def test_mixed_sources_refuse_overlaps_and_bad_numbers(tmp_path):
    files = mixed_files(tmp_path)
    image_file, class_file = str(tmp_path / "per_image.json"), str(tmp_path / "per_class.json")
    cases = [
        ([f"{image_file}:1-2", f"{image_file}:2-3"], "question 2 of .*per_image.json is taken by .* and "),
        ([f"{image_file}:2,4"], "question 4 is past the 3 questions of .*per_image.json; number the file's questions"),
        ([f"{image_file}:3-1"], "'3-1' is not a range of question numbers"),
        ([f"{image_file}:1,1"], "question 1 is listed twice"),
        ([str(tmp_path / "none.json")], "aspect file .*none.json does not exist"),
    ]
    for sources, message in cases:
        with pytest.raises((ConfigError, ArtifactError), match=message):
            build_data(mixed_cfg(tmp_path, sources))
    # the same question text in two files (their sidecars list it) is one question taken twice
    copy = tmp_path / "copy.json"
    write_aspect_file(copy, files["rows"], meta={"questions": ["Can it fly?", "Is it red?", "Is it big?"]})
    with pytest.raises(ConfigError, match=r"the question 'Is it red\?' is answered by .*per_image.json:1' and by"):
        build_data(mixed_cfg(tmp_path, [f"{image_file}:1", f"{copy}:2"]))
    assert build_data(mixed_cfg(tmp_path, [f"{image_file}:1", f"{copy}:3"])).num_aspects == 2
    with pytest.raises(ConfigError, match="DATASET.ASPECT_JSON .* and DATASET.ASPECT_SOURCES are both set"):
        build_data(mixed_cfg(tmp_path, [image_file], **{"DATASET.ASPECT_JSON": image_file}))
    with pytest.raises(ConfigError, match="MaKD.ASPECT_NUM is 3 but .*per_class.json has 5 aspects per image"):
        build_data(mixed_cfg(tmp_path, [image_file, class_file], **{"MaKD.ASPECT_NUM": 3}))


def test_mixed_missing_rows_are_named_per_source(tmp_path):
    files = mixed_files(tmp_path)
    partial = {k: v for k, v in files["rows"].items() if k != "bee/img_2"}
    write_aspect_file(tmp_path / "partial.json", partial)
    _write(tmp_path / "two_classes.json", {k: CLASS_ROWS[k] for k in ("Ant", "bee")})
    class_file = str(tmp_path / "per_class.json")
    with pytest.raises(ArtifactError, match=r"^1 training images have no row in .*partial.json \(first: bee/img_2\)"):
        build_data(mixed_cfg(tmp_path, [str(tmp_path / "partial.json"), class_file]))
    with pytest.raises(ArtifactError, match=r"ASPECT_SOURCES .*two_classes.json: 1 class\(es\) of the dataset have no"):
        build_data(mixed_cfg(tmp_path, [str(tmp_path / "per_image.json"), str(tmp_path / "two_classes.json")]))
    dropped = build_data(
        mixed_cfg(tmp_path, [str(tmp_path / "partial.json"), class_file], **{"DATASET.MISSING_ASPECTS": "drop"})
    )
    assert dropped.dropped_ids == ["bee/img_2"] and len(dropped.train) == 11
    assert np.isfinite(dropped.train.targets.numpy()).all()


def test_multiple_choice_part_brings_all_options_of_its_questions(tmp_path):
    mixed_files(tmp_path)
    choice = _write(tmp_path / "choice.json", {c: [[0.1, 0.9], [0.2, 0.3, 0.5], [0.7, 0.3]] for c in CLASSES})
    data = build_data(mixed_cfg(tmp_path, [f"{tmp_path / 'per_image.json'}:2", f"{choice}:2-3"]))
    assert data.num_aspects == 1 + 5
    assert data.train.targets[0, 1:].tolist() == pytest.approx([0.2, 0.3, 0.5, 0.7, 0.3])
    assert data.aspect_sources[1]["kind"] == "multiple_choice" and data.aspect_sources[1]["target_columns"] == [1, 6]


def test_class_level_questions_files_are_checked_with_their_options(tmp_path):
    from makd.formats.questions import questions_sha256

    lines = ["How large is a <object>? | Small | Medium | Large", "What coat has a <object>? | Short | Long"]
    (tmp_path / "choice_q.txt").write_text("\n".join(lines) + "\n")
    choice = _write(tmp_path / "choice.json", {c: [[0.2, 0.3, 0.5], [0.9, 0.1]] for c in CLASSES})
    (tmp_path / "choice.json.meta.json").write_text(json.dumps({"questions_sha256": questions_sha256(lines)}))
    source = open_source(choice, key="DATASET.ASPECT_JSON", class_names=CLASSES)
    assert source.kind == "multiple_choice" and source.check_questions(str(tmp_path / "choice_q.txt")) == lines
    (tmp_path / "two_options.txt").write_text("How large is a <object>? | Small | Large\n" + lines[1] + "\n")
    with pytest.raises(ConfigError, match=r"two_options.txt: question 1 has 2 options but .*choice.json gives 3"):
        source.check_questions(str(tmp_path / "two_options.txt"))
    (tmp_path / "one.txt").write_text(lines[0] + "\n")
    with pytest.raises(ConfigError, match=r"one.txt holds 1 questions but .*choice.json has 2 multiple-choice"):
        source.check_questions(str(tmp_path / "one.txt"))
    edited = [lines[0], "What fur has a <object>? | Short | Long"]
    (tmp_path / "edited.txt").write_text("\n".join(edited) + "\n")
    with pytest.raises(ConfigError, match=r"edited.txt \(sha256 \w+\) is not the questions file .*choice.json was"):
        source.check_questions(str(tmp_path / "edited.txt"))
