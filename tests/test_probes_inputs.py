"""Probes of issue 20, items 4, 5, 8 and 9: inputs a careless or unlucky user gives, through the real commands.

Every refused case asserts the exit code (2), exactly one `error:` line (the last line on stderr, no traceback)
naming what is wrong and how to go on, and that no file the user had was changed or added. The assertion messages
start with the failure class the issue counts, so a failing probe says which it is: SILENT (exit 0 on input that
cannot mean what it says), TRACEBACK, UNCLEAR (exit 2 but the line misses what it must say) or CHANGED (a user's
file altered, or a file written by a refused command). Cases that must succeed (an empty shard, a table without an
interval) assert what they print instead.

Classes and members:
- item 4, strict parsing: a key written twice in a config, in a `_BASE_` parent, in a study, in a COCO file, in a
  sidecar, in a class map, in a truth file, in a prompts file, in an aspect file; text lists: a class list whose BOM
  hid a repeated class (stage 1 and stage 2 --level class), a question repeated after blank lines, a split file
  repeating an id, and a class list with a BOM and CRLF read clean;
- item 5, data that cannot mean what it says: a COCO set of crowd regions only, of degenerate boxes only, train and
  test categories with the same ids under other names, per-box rows made from another instances file, a per-class
  file missing a class (DATASET.ASPECT_JSON, LaViD.CLASS_TARGETS) and one whose keys name no class;
- item 8, shards: malformed --shard values, more shards than images, a merge without the empty shards, shards made
  with different settings, a merge missing a shard that holds images;
- item 9, statistics: tables from 2 seeds and from differences of zero spread, AUCs from too few answers (audit,
  per-question metrics).
"""

# ruff: noqa: F811  (the fixtures imported from mllm_fixtures are pytest parameters here)

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from coco_fixtures import tiny_coco_dict, write_coco
from mllm_fixtures import questions_file, tiny_hf_model, write_image_folder  # noqa: F401
from test_report import write_run
from test_train_e2e import FAST
from tool_modules import load_tool

from makd.analysis.aspect_metrics import aspect_metrics
from makd.commands.aspects import main as aspects_main
from makd.commands.make_questions import main as make_questions_main
from makd.commands.stage2 import main as stage2_main
from makd.commands.stage2 import merge_main
from makd.demo.detection import generate_detection_demo
from makd.formats.aspect_files import read_aspect_file, write_aspect_file
from makd.formats.files import sidecar_path

REPO = Path(__file__).resolve().parents[1]
DETECTION_CONFIG = REPO / "configs" / "demo_detection" / "makd.yaml"
our_train = load_tool("our_train")
study_tool = load_tool("study")
report_tool = load_tool("report")


# ----------------------------------------------------------------------------------------------------- helpers
def files_under(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes): what the user had, to compare after a refused command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(capsys, code: int, *must_say: str) -> str:
    """Exit 2 with exactly one `error:` line, the last on stderr, holding every text of `must_say`."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"SILENT: exit 0 (stderr: {err[-400:]!r})"
    assert "Traceback" not in err, f"TRACEBACK: exit {code}: {err[-600:]}"
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0], f"UNCLEAR: exit {code}, stderr {lines[-3:]}"
    for text in must_say:
        assert text in errors[0], f"UNCLEAR: {errors[0]!r} does not say {text!r}"
    return errors[0]


def assert_unchanged(before: dict[str, bytes], root: Path) -> None:
    """No file under `root` changed, went or came. (Empty folders a refused run leaves are issue 20 item 1's.)"""
    after = files_under(root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(set(after) - set(before))
    assert not changed and not added, f"CHANGED: changed {changed[:5]}, added {added[:5]}"


def stage2_args(model: Path | str, questions: Path, images: Path, output: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--questions", str(questions), "--images", str(images), "--output", str(output),
            "--max-tiles", "2", "--batch-size", "3", "--dtype", "float32", "--device", "cpu", "--no-progress",
            *map(str, extra)]  # fmt: skip


def detection_args(demo: Path, out: Path, *extra: str) -> list[str]:
    return [str(DETECTION_CONFIG), "OUTPUT_DIR", str(out), "DATASET.TRAIN_IMAGE_PATH", str(demo / "train"),
            "DATASET.TEST_IMAGE_PATH", str(demo / "test"), "DATASET.ASPECT_JSON", str(demo / "box_aspects_train.json"),
            "DATASET.TEST_ASPECT_JSON", "", "DATASET.QUESTIONS", str(demo / "questions.txt"),
            "DETECTION.TRAIN_JSON", str(demo / "instances_train.json"), "DETECTION.TEST_JSON",
            str(demo / "instances_test.json"), "SOLVER.EPOCHS", "1", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def detection_demo(tmp_path_factory) -> Path:
    """The detection demo, 16 train / 6 test images of 64 px (probes copy what they change)."""
    root = tmp_path_factory.mktemp("probe_detection") / "data"
    generate_detection_demo(root, num_train=16, num_test=6, seed=3)
    return root


# ------------------------------------------------------------------------------- item 4: keys written twice
def test_config_with_two_solver_blocks(release_dataset, capsys):
    root, config = release_dataset["root"], release_dataset["config"]
    text = config.read_text()
    config.write_text(text + "SOLVER:\n  EPOCHS: 1\n")  # the user meant to change EPOCHS; the first block vanished
    before = files_under(root)
    line = assert_refused(capsys, our_train.main([str(config), *FAST]), f"{config}: SOLVER is written twice (lines ")
    assert "write it once" in line
    assert_unchanged(before, root)


def test_a_key_written_twice_in_a_base_config_names_that_file(release_dataset, capsys):
    root, config = release_dataset["root"], release_dataset["config"]
    base = root / "base.yaml"
    base.write_text(config.read_text().replace("  ALPHA: 4.0\n", "  ALPHA: 4.0\n  ALPHA: 1.0\n"))
    child = root / "child.yaml"
    child.write_text("_BASE_: base.yaml\nSEED: 3\n")
    before = files_under(root)
    assert_refused(capsys, our_train.main([str(child), *FAST]), f"{base}: MaKD.ALPHA is written twice (lines ")
    assert_unchanged(before, root)


def test_a_study_naming_a_condition_twice(release_dataset, tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: twice\nbase: {release_dataset['config']}\noutput: {tmp_path / 'study_out'}\nseeds: [0]\n"
        "conditions:\n  baseline:\n    DISTILLER.TYPE: NONE\n  makd: {}\n  baseline:\n    MaKD.TARGETS: random\n"
    )
    before = files_under(tmp_path)
    line = assert_refused(capsys, study_tool.main([str(study)]), "conditions.baseline is written twice (lines 6 and 9)")
    assert line.startswith(f"error: study file {study}: ")
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "study_out").exists()


def test_a_coco_file_naming_annotations_twice(tmp_path, questions_file, capsys):
    data = tiny_coco_dict()
    instances, images = write_coco(tmp_path / "coco", data)
    one_box = json.dumps({"annotations": data["annotations"][:1]})[1:-1]
    text = json.dumps(data, indent=1)
    instances.write_text(text[:-2] + ",\n" + one_box + "\n}")  # a second "annotations" list at the end
    before = files_under(tmp_path)
    argv = stage2_args("no-model-needed", questions_file, images, tmp_path / "boxes.json", "--boxes", instances)
    assert_refused(capsys, stage2_main(argv), f"{instances}: key 'annotations' appears twice at the top level (lines ")
    assert_unchanged(before, tmp_path)


def test_a_sidecar_with_a_key_written_twice(tmp_path, capsys):
    part = tmp_path / "part.json"
    write_aspect_file(part, {"a": [0.5]}, meta={"shard": {"index": 0, "count": 1}, "num_images_planned": 1})
    meta = sidecar_path(part)
    meta.write_text(meta.read_text()[:-2] + ',\n  "num_images_planned": 2\n}\n')
    before = files_under(tmp_path)
    code = merge_main([str(part), "--output", str(tmp_path / "merged.json")])
    assert_refused(capsys, code, f"{meta}: key 'num_images_planned' appears twice at the top level")
    assert_unchanged(before, tmp_path)


def test_a_class_map_pairing_a_class_twice(tmp_path, capsys):
    (tmp_path / "images" / "Faces").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "Faces" / "a.png")
    (tmp_path / "rows.json").write_text(json.dumps({"face": [0.5], "car": [0.1]}))
    for name, text, says in (
        ("map.json", '{"Faces": "face",\n "Faces": "car"}', "key 'Faces' appears twice at the top level (lines 1 and"),
        ("map.tsv", "Faces\tface\n\nfaces\tcar\n", "map.tsv:3: class pairing 'faces\\tcar' repeats line 1"),
    ):
        (tmp_path / name).write_text(text)
        before = files_under(tmp_path)
        argv = ["convert", str(tmp_path / "rows.json"), "--out", str(tmp_path / "out.json"), "--images",
                str(tmp_path / "images"), "--level", "class", "--class-map", str(tmp_path / name)]  # fmt: skip
        assert_refused(capsys, aspects_main(argv), says)
        assert_unchanged(before, tmp_path)


def test_a_truth_file_listing_an_image_twice(tmp_path, capsys):
    write_aspect_file(tmp_path / "teacher.json", {"a": [0.9], "b": [0.2]})
    (tmp_path / "truth.json").write_text('{"a": [1],\n "b": [0],\n "a": [0]}')
    before = files_under(tmp_path)
    code = aspects_main(["audit", str(tmp_path / "teacher.json"), "--truth", str(tmp_path / "truth.json")])
    assert_refused(capsys, code, "truth.json: key 'a' appears twice at the top level (lines 1 and 3)")
    assert_unchanged(before, tmp_path)


def test_a_prompts_file_with_a_key_written_twice(tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text('generate: "List {N} questions about {CLASS_LIST}."\nselect: "Keep {Q}."\n'
                       'generate: "Write {N} questions."\n')  # fmt: skip
    before = files_under(tmp_path)
    argv = ["--classes", str(tmp_path / "classes.txt"), "--n", "4", "--q", "2", "--dry-run", "--prompts", str(prompts)]
    assert_refused(capsys, make_questions_main(argv), f"{prompts}: generate is written twice (lines 1 and 3)")
    assert_unchanged(before, tmp_path)


def test_an_aspect_file_with_an_image_twice(release_dataset, capsys):
    root, aspects = release_dataset["root"], release_dataset["aspects"]
    aspects.write_text(aspects.read_text()[: -len("\n}\n")] + ',\n"Bengal_2_3": [0.5, 0.5, 0.5, 0.5, 0.5]\n}\n')
    before = files_under(root)
    code = our_train.main([str(release_dataset["config"]), *FAST])
    assert_refused(capsys, code, "image id 'Bengal_2_3' has 2 rows (lines ", "keep one row per image id")
    assert_unchanged(before, root)


def test_a_per_class_file_naming_a_class_twice(release_dataset, capsys):
    root = release_dataset["root"]
    rows = root / "class_rows.json"
    rows.write_text('{"abyssinian": [0.9, 0.1, 0.5, 0.5, 0.5],\n "American Bulldog": [0.2, 0.7, 0.4, 0.5, 0.5],\n'
                    ' "bengal": [0.6, 0.6, 0.1, 0.5, 0.5],\n "bengal": [0.1, 0.1, 0.9, 0.5, 0.5]}')  # fmt: skip
    before = files_under(root)
    code = our_train.main([str(release_dataset["config"]), *FAST, "DATASET.ASPECT_JSON", str(rows)])
    assert_refused(capsys, code, f"DATASET.ASPECT_JSON {rows}: class 'bengal' has more than one row (lines 3 and 4)")
    assert_unchanged(before, root)


# ------------------------------------------------------------------------------------ item 4: text lists
def test_a_class_list_whose_byte_order_mark_hid_a_repeated_class(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffcat\r\ndog\r\n\r\nCat\r\n".encode())  # "\ufeffcat" != "cat": the repeat was hidden
    before = files_under(tmp_path)
    argv = ["--classes", str(classes), "--num-images", "10", "--n", "4", "--q", "2", "--dry-run"]
    assert_refused(capsys, make_questions_main(argv), f"{classes}:4: class 'Cat' repeats line 1; list each class once")
    assert_unchanged(before, tmp_path)


def test_a_class_list_with_a_bom_and_crlf_reads_clean(tmp_path, capsys, caplog):
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffcat\r\ndog\r\n".encode())
    argv = ["--classes", str(classes), "--num-images", "10", "--n", "4", "--q", "2", "--dry-run"]
    with caplog.at_level(logging.WARNING, logger="makd.formats.text_lists"):
        assert make_questions_main(argv) == 0
    printed = capsys.readouterr().out
    assert "The class list is as follows: cat, dog," in printed and "\ufeff" not in printed, "SILENT: BOM in prompt"
    assert [r.getMessage() for r in caplog.records] == [
        f"{classes}: removed the UTF-8 byte-order mark at the start of the file (it is not part of any class)",
        f"{classes}: read its Windows (CRLF) or CR line ends as plain line ends",
    ]


def test_a_class_level_stage2_class_list_with_a_repeat(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffPug\nBeagle\nbeagle\n".encode())
    (tmp_path / "q.txt").write_text("Is the <object> small?\n")
    before = files_under(tmp_path)
    argv = ["--level", "class", "--classes", str(classes), "--questions", str(tmp_path / "q.txt"), "--model",
            "no-model-needed", "--output", str(tmp_path / "class.json")]  # fmt: skip
    assert_refused(capsys, stage2_main(argv), f"{classes}:3: class 'beagle' repeats line 2")
    assert_unchanged(before, tmp_path)


def test_a_question_repeated_after_blank_lines(tmp_path, capsys):
    write_image_folder(tmp_path / "images", 2)
    questions = tmp_path / "q.txt"
    questions.write_text("Is it red?\n\n\nIs it  RED?\nIs it round?\n")
    before = files_under(tmp_path)
    argv = stage2_args("no-model-needed", questions, tmp_path / "images", tmp_path / "out.json")
    # (the error line folds runs of spaces, as every one-line error does)
    assert_refused(capsys, stage2_main(argv), f"{questions}:4: question 'Is it RED?' repeats line 1")
    assert_unchanged(before, tmp_path)


def test_a_split_file_listing_an_image_twice(tmp_path, capsys):
    from test_data_helpers import write_class_folders

    ids = write_class_folders(tmp_path / "images", {"ant": 3, "bee": 3})
    split, test_split = tmp_path / "train.txt", tmp_path / "test.txt"
    split.write_text("\n".join([ids[0], ids[3], "", ids[0]]) + "\n")
    test_split.write_text("\n".join([ids[1], ids[4]]) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"DATASET:\n  TYPE: image_folder\n  TRAIN_IMAGE_PATH: {tmp_path / 'images'}\n  TEST_IMAGE_PATH: "
        f"{tmp_path / 'images'}\n  TRAIN_SPLIT_FILE: {split}\n  TEST_SPLIT_FILE: {test_split}\n  NUM_WORKERS: 0\n"
        f"DISTILLER:\n  TYPE: NONE\n  STUDENT: resnet8x4\nOUTPUT_DIR: {tmp_path / 'run'}\n"
    )
    before = files_under(tmp_path)
    assert_refused(capsys, our_train.main([str(config), *FAST]), f"{split}:4: id {ids[0]!r} repeats line 1")
    assert_unchanged(before, tmp_path)


# ---------------------------------------------------------------------- item 5: data that cannot mean it
@pytest.mark.parametrize("case", ["all_crowd", "all_degenerate"])
def test_a_coco_set_without_a_usable_box(case, tmp_path, questions_file, capsys):
    data = tiny_coco_dict()
    for entry in data["annotations"]:
        if case == "all_crowd":
            entry["iscrowd"] = 1
        else:
            entry["bbox"] = [4, 4, 0, 9]
    instances, images = write_coco(tmp_path / "coco", data)
    before = files_under(tmp_path)
    argv = stage2_args("no-model-needed", questions_file, images, tmp_path / "boxes.json", "--boxes", instances)
    crowd, degenerate = (4, 0) if case == "all_crowd" else (0, 4)
    assert_refused(capsys, stage2_main(argv), f"no usable box: of its 4 annotations {crowd} are crowd regions",
                   f"and {degenerate} have zero width or height")  # fmt: skip
    assert_unchanged(before, tmp_path)


def test_train_and_test_categories_with_the_same_ids_under_other_names(detection_demo, tmp_path, capsys):
    data = json.loads((detection_demo / "instances_test.json").read_text())
    first, second = data["categories"][0], data["categories"][1]
    first["name"], second["name"] = second["name"], first["name"]  # another export numbered them the other way
    other = tmp_path / "instances_test.json"
    other.write_text(json.dumps(data))
    before = files_under(tmp_path)
    code = our_train.main(detection_args(detection_demo, tmp_path / "run", "DETECTION.TEST_JSON", str(other)))
    assert_refused(capsys, code, "give 2 category id(s) different names (first: id ", "give both files the same")
    assert_unchanged(before, tmp_path)


def test_per_box_rows_made_from_another_instances_file(detection_demo, tiny_hf_model, tmp_path, capsys):
    rows = tmp_path / "boxes.json"
    argv = stage2_args(tiny_hf_model, detection_demo / "questions.txt", detection_demo / "train", rows,
                       "--boxes", detection_demo / "instances_train.json")  # fmt: skip
    assert stage2_main(argv) == 0
    capsys.readouterr()
    # The same images re-exported: annotation ids given out in another order, so every box id still exists but
    # names another box.
    data = json.loads((detection_demo / "instances_train.json").read_text())
    ids = [a["id"] for a in data["annotations"]]
    for annotation, new_id in zip(data["annotations"], reversed(ids)):
        annotation["id"] = new_id
    other = tmp_path / "instances_train_v2.json"
    other.write_text(json.dumps(data))
    before = files_under(tmp_path)
    code = our_train.main(detection_args(detection_demo, tmp_path / "run", "DATASET.ASPECT_JSON", str(rows),
                                         "DETECTION.TRAIN_JSON", str(other)))  # fmt: skip
    assert_refused(capsys, code, f"DATASET.ASPECT_JSON {rows} was made from another instances file",
                   f"than DETECTION.TRAIN_JSON {other}", f"run stage 2 --boxes on {other}")  # fmt: skip
    assert_unchanged(before, tmp_path)


def test_a_per_class_file_missing_a_dataset_class(release_dataset, capsys):
    root = release_dataset["root"]
    per_class = root / "class_rows.json"  # "Bengal" is written "Bengal cat": the rules do not pair it
    per_class.write_text(json.dumps({"abyssinian": [0.9] * 5, "American Bulldog": [0.2] * 5, "Bengal cat": [0.6] * 5}))
    before = files_under(root)
    code = our_train.main([str(release_dataset["config"]), *FAST, "DATASET.ASPECT_JSON", str(per_class)])
    line = assert_refused(capsys, code, "1 class(es) of the dataset have no row: 'Bengal' (file has 'Bengal cat'?)",
                          "pair each with its row in DATASET.ASPECT_CLASS_MAP")  # fmt: skip
    assert "MISSING_ASPECTS" not in line and "training images have no row" not in line
    assert_unchanged(before, root)


def test_a_lavid_class_file_missing_a_dataset_class(release_dataset, capsys):
    root = release_dataset["root"]
    targets = root / "lavid.json"
    targets.write_text(json.dumps({"abyssinian": [[0.5, 0.5]], "American Bulldog": [[0.2, 0.8]]}))
    before = files_under(root)
    code = our_train.main([str(release_dataset["config"]), *FAST, "DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS",
                           str(targets), "DATASET.ASPECT_JSON", ""])  # fmt: skip
    assert_refused(capsys, code, "1 class(es) of the dataset have no row: 'Bengal'", "LaViD.CLASS_MAP")
    assert_unchanged(before, root)


def test_a_per_class_file_whose_keys_name_no_class_says_so(release_dataset, capsys):
    root = release_dataset["root"]
    other = root / "flowers_rows.json"  # another dataset's per-class file
    other.write_text(json.dumps({"pink primrose": [0.1] * 5, "hard-leaved pocket orchid": [0.2] * 5}))
    before = files_under(root)
    code = our_train.main([str(release_dataset["config"]), *FAST, "DATASET.ASPECT_JSON", str(other)])
    assert_refused(capsys, code, "with 2 rows for 3 classes it looks like one row per class",
                   "pair them in DATASET.ASPECT_CLASS_MAP")  # fmt: skip
    assert_unchanged(before, root)


# ------------------------------------------------------------------------------------------- item 8: shards
@pytest.mark.parametrize(
    ("shard", "says"),
    [
        ("-1/2", "--shard '-1/2': the shard index must be in 0..1"),
        ("2/2", "--shard '2/2': the shard index must be in 0..1, shards are numbered from 0 (the last of 2 is 1/2)"),
        ("1/2/3", "--shard '1/2/3' is not I/N, two whole numbers (e.g. 0/4"),
        ("0/0", "--shard '0/0': the number of shards N must be at least 1"),
        ("a/b", "--shard 'a/b' is not I/N"),
        ("1.0/2", "--shard '1.0/2' is not I/N"),
    ],
)
def test_a_malformed_shard(shard, says, tmp_path, questions_file, capsys):
    write_image_folder(tmp_path / "images", 3)
    before = files_under(tmp_path)
    argv = stage2_args("no-model-needed", questions_file, tmp_path / "images", tmp_path / "out.json", "--shard", shard)
    assert_refused(capsys, stage2_main(argv), says)
    assert_unchanged(before, tmp_path)


def test_more_shards_than_images_finish_and_merge_without_the_empty_ones(tiny_hf_model, questions_file, tmp_path,
                                                                          capsys):  # fmt: skip
    images = tmp_path / "images"
    write_image_folder(images, 3)
    whole = tmp_path / "whole.json"
    assert stage2_main(stage2_args(tiny_hf_model, questions_file, images, whole)) == 0
    parts = [tmp_path / f"part{i}.json" for i in range(5)]
    for i, part in enumerate(parts):  # a job array of 5 tasks for 3 images: shards 0 and 2 hold none
        assert stage2_main(stage2_args(tiny_hf_model, questions_file, images, part, "--shard", f"{i}/5")) == 0
        err = capsys.readouterr().err
        if i in (0, 2):
            assert f"note: --shard {i}/5 holds none of the 3 images (5 shards for 3 images); nothing to score" in err
            assert "merge_shards needs only the shards that hold some (1, 3, 4)" in err
            assert not part.exists() and not sidecar_path(part).exists()
    written = [str(p) for p in parts if p.exists()]
    assert len(written) == 3
    merged = tmp_path / "merged.json"
    assert merge_main([*written, "--output", str(merged), "--images", str(images)]) == 0
    assert read_aspect_file(merged).ids == read_aspect_file(whole).ids
    np.testing.assert_array_equal(read_aspect_file(merged).values, read_aspect_file(whole).values)
    # A shard that holds images is still required.
    capsys.readouterr()
    before = files_under(tmp_path)
    code = merge_main([written[0], written[2], "--output", str(tmp_path / "incomplete.json")])
    assert_refused(capsys, code, "shard(s) 3/5 missing from the merge; run them")
    assert_unchanged(before, tmp_path)


def test_shards_made_with_different_settings_name_the_setting_and_both_values(tiny_hf_model, questions_file,
                                                                               tmp_path, capsys):  # fmt: skip
    images = tmp_path / "images"
    write_image_folder(images, 2)
    first, second = tmp_path / "s0.json", tmp_path / "s1.json"
    assert stage2_main(stage2_args(tiny_hf_model, questions_file, images, first, "--shard", "0/2")) == 0
    argv = stage2_args(tiny_hf_model, questions_file, images, second, "--shard", "1/2")
    argv[argv.index("--max-tiles") + 1] = "1"
    assert stage2_main(argv) == 0
    capsys.readouterr()
    before = files_under(tmp_path)
    code = merge_main([str(first), str(second), "--output", str(tmp_path / "merged.json")])
    assert_refused(capsys, code, f"{second}: made with teacher.tiling.max_tiles 1 but {first} with 2",
                   "rerun the shards made with the other teacher.tiling.max_tiles")  # fmt: skip
    assert_unchanged(before, tmp_path)


# --------------------------------------------------------------------------------------- item 9: statistics
@pytest.mark.parametrize(
    ("pairs", "says"),
    [
        ([(61.0, 60.5), (62.5, 62.0)], "-0.50 (n=2: an interval needs 3 seeds)"),  # printed -0.50 [-0.50, -0.50]
        ([(60.0, 59.5), (61.5, 61.0), (59.0, 58.5)], "-0.50 (the 3 seeds all differ by -0.50: zero spread, no "
         "interval)"),  # fmt: skip
    ],
)
def test_a_table_prints_no_interval_that_cannot_mean_anything(pairs, says, tmp_path):
    for seed, (base, makd) in enumerate(pairs):
        write_run(tmp_path / "runs" / f"base_s{seed}", seed, base, base, "base", DISTILLER__TYPE="NONE")
        write_run(tmp_path / "runs" / f"makd_s{seed}", seed, makd, makd, "makd", DISTILLER__TYPE="MaKD")
    before = files_under(tmp_path / "runs")
    runs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert report_tool.main([*runs, "--out", str(tmp_path / "table")]) == 0
    row = next(r for r in (tmp_path / "table" / "results.md").read_text().splitlines() if r.startswith("| makd |"))
    assert f"| {says} | {says} |" in row and "[" not in row, f"SILENT: {row}"
    table = {r["condition"]: r for r in csv.DictReader((tmp_path / "table" / "results.csv").open())}
    assert table["makd"]["diff_last_ci_low"] == table["makd"]["diff_last_ci_high"] == ""
    assert_unchanged(before, tmp_path / "runs")


def test_an_audit_auc_from_too_few_answers_is_left_out_with_its_counts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = [f"img_{i:03d}" for i in range(40)]
    truth = {i: [int(k < 20), int(k < 3)] for k, i in enumerate(ids)}  # question 2: 3 true among 40
    teacher = {i: [round(0.8 * t[0] + 0.1 + 0.05 * rng.random(), 4), round(float(rng.random()), 4)]
               for i, t in truth.items()}  # fmt: skip
    write_aspect_file(tmp_path / "teacher.json", teacher)
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    assert aspects_main(["audit", str(tmp_path / "teacher.json"), "--truth", str(tmp_path / "truth.json"),
                         "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    q1, q2 = result["questions"]
    assert q1["auc"] == 1.0 and (q1["truth_positives"], q1["truth_negatives"]) == (20, 20)
    assert q2["auc"] is None and (q2["truth_positives"], q2["truth_negatives"]) == (3, 37), "SILENT: an AUC from 3"
    assert result["mean_auc"] == 1.0 and result["questions_with_auc"] == 1


def test_a_student_auc_from_too_few_teacher_answers_is_in_no_mean():
    labels = np.arange(50) % 5
    teacher = np.stack([(labels < 2) * 0.8 + 0.1, (np.arange(50) == 7) * 0.8 + 0.1], axis=1)  # question 2: 1 yes
    student = np.stack([teacher[:, 0], np.linspace(0, 1, 50)], axis=1)
    result = aspect_metrics(teacher, student, labels, num_classes=5)
    q2 = result["questions"][1]
    assert math.isnan(q2["student_auc"]) and (q2["teacher_yes_images"], q2["teacher_no_images"]) == (1, 49)
    assert result["mean"]["student_auc"] == pytest.approx(1.0) and result["student_auc_questions"] == 1

