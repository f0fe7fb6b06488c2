"""tools/aspects.py: inspect (tolerant), convert (keys, classes, multiple choice, LaViD files), audit (truth, CUB)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mirrors import mirror
from PIL import Image
from tool_modules import load_tool

from makd.demo.classification import UNRELIABLE_QUESTIONS, generate_demo
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar, sha256_file

REPO = Path(__file__).resolve().parents[1]
LAVID = mirror("lliangthomas/lavid")
FAST = ["DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0"]


aspects = load_tool("aspects")
our_train = load_tool("our_train")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def write_images(root: Path, names_by_class: dict[str, list[str]], ext: str = ".png") -> list[str]:
    """root/<class>/<name><ext> for each name; returns the image ids."""
    ids = []
    for label, (cls, names) in enumerate(names_by_class.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            pixels = np.full((12, 12, 3), (label * 90 + 40) % 256, dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{name}{ext}")
            ids.append(f"{cls}/{name}")
    return ids


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()  # drop what earlier commands printed
    assert aspects.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------- inspect
def test_inspect_reports_every_problem_instead_of_stopping(tmp_path, capsys):
    grid = [sigmoid(k / 8) for k in (-9, -3, 1, 6)]  # bf16-style logits on the 1/8 grid
    lines = [
        json.dumps({"jpg/a.jpg": grid}),
        json.dumps({"jpg/b.jpg": [0.9, 0.8, 0.7, 0.1]}),
        json.dumps({"jpg/a.jpg": grid}),  # repeated, same values
        json.dumps({"jpg/b.jpg": [0.9, 0.8, 0.7, 0.2]}),  # repeated, other values
        "{not json",
        '{"jpg/c.jpg": [0.5, NaN, 1.5, 0.5]}',
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = run_json(capsys, "inspect", str(path))
    assert (report["rows"], report["distinct_keys"]) == (5, 3)
    assert report["duplicates"] == {
        "keys": 2,
        "identical": 1,
        "conflicting": 1,
        "examples": ["jpg/a.jpg", "jpg/b.jpg"],
    }
    assert report["keys"]["with_image_extension"] == 3 and report["keys"]["with_folder"] == 3
    assert report["problems"]["count"] == 3  # the bad line, the NaN, the 1.5
    assert "line 5: not JSON" in report["problems"]["examples"][0]
    assert any("question 2 is nan" in p for p in report["problems"]["examples"])
    assert any("question 3 is 1.5, outside [0, 1]" in p for p in report["problems"]["examples"])
    values = report["values"]
    assert values["count"] == 16 and values["histogram"][9] == 2  # four good rows x Q = 4
    q1 = report["questions"][0]  # column 1 over the good rows: grid[0], 0.9, grid[0], 0.9
    assert q1["yes_rate"] == 0.5 and q1["entropy_bits"] == pytest.approx(1.0)
    assert q1["mean_p"] == pytest.approx((2 * grid[0] + 2 * 0.9) / 4)

    on_grid = tmp_path / "grid.json"
    on_grid.write_text(json.dumps({f"i{k}": [sigmoid(k / 8), sigmoid(-k / 8 - 1)] for k in range(40)}))
    quant = run_json(capsys, "inspect", str(on_grid))["values"]["quantisation"]
    assert quant["logit_grid"] == {"step": 0.125, "share": 1.0}
    rng = np.random.default_rng(0)
    smooth = tmp_path / "smooth.json"
    smooth.write_text(json.dumps({f"i{k}": rng.uniform(0.01, 0.99, 3).tolist() for k in range(40)}))
    assert run_json(capsys, "inspect", str(smooth))["values"]["quantisation"]["logit_grid"]["step"] == 0.0

    assert aspects.main(["inspect", str(path)]) == 0  # the text report names the same findings
    text = capsys.readouterr().out
    assert "2 keys appear more than once (1 with identical values, 1 conflicting)" in text
    assert "problems: 3" in text


def test_inspect_counts_box_keyed_rows(tmp_path, capsys):
    from makd.formats.aspect_files import write_aspect_file

    path = tmp_path / "boxes.json"  # stage 2 per box keys rows "<image id>#<annotation id>"
    write_aspect_file(path, {"5#101": [0.2, 0.9], "5#102": [0.4, 0.1], "cat/img_1": [0.5, 0.5], "7#x": [0.3, 0.3]})
    report = run_json(capsys, "inspect", str(path))
    assert report["keys"]["box_ids"] == 2 and report["problems"]["count"] == 0
    assert aspects.main(["inspect", str(path)]) == 0
    assert "1 with a folder prefix, 2 box ids (<image id>#<annotation id>)" in capsys.readouterr().out


def test_pickles_and_non_json_are_refused_in_one_line(tmp_path, capsys):
    pickle = tmp_path / "aspects.pkl"
    pickle.write_bytes(b"\x80\x04K\x01.")
    assert aspects.main(["inspect", str(pickle)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pickled aspect files are not read" in err and err.count("\n") == 1
    text = tmp_path / "x.json"
    text.write_text("[1, 2")
    assert aspects.main(["inspect", str(text)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    text.write_text("{}")
    assert run_json(capsys, "inspect", str(text))["problems"] == {"count": 1, "examples": ["the file holds no rows"]}


# ----------------------------------------------------------------------------- convert: image level
def test_convert_maps_prefixed_keys_with_extensions_to_image_ids(tmp_path, capsys):
    images = tmp_path / "images"
    ids = write_images(images, {"daisy": ["image_00001", "image_00002"], "rose": ["image_00003"]})
    rows = {f"jpg/image_0000{i}.jpg": [i / 10, 1 - i / 10] for i in (1, 2, 3, 4)}
    source = tmp_path / "lavid.jsonl"
    lines = [json.dumps({k: v}) for k, v in rows.items()] + [
        json.dumps({"jpg/image_00001.jpg": rows["jpg/image_00001.jpg"]})
    ]
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "converted.json"

    # image_00004 is not in the folder: refused unless asked, naming the key.
    assert aspects.main(["convert", str(source), "--out", str(out), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert "1 of 4 keys match no image" in err and "jpg/image_00004.jpg" in err and "--drop-unmatched" in err
    assert not out.exists()

    argv = ["convert", str(source), "--out", str(out), "--images", str(images), "--drop-unmatched"]
    assert aspects.main(argv) == 0
    captured = capsys.readouterr()
    assert "merged 1 repeated keys with identical values" in captured.err
    table = read_aspect_file(out)
    assert table.ids == ids  # daisy/image_00001, daisy/image_00002, rose/image_00003
    np.testing.assert_allclose(table.values, [[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]], rtol=1e-6)
    meta = read_sidecar(out)
    assert meta["source_sha256"] == sha256_file(source) and meta["source"] == str(source.resolve())
    assert meta["level"] == "image" and meta["mapping"]["dropped_keys"] == 1
    assert meta["mapping"]["examples"]["jpg/image_00003.jpg"] == "rose/image_00003"
    assert meta["mapping"]["repeats"] == {"identical_repeats": 1, "conflicting_repeats": 0}

    # An existing output is kept unless --overwrite.
    assert aspects.main(argv) == 2 and "already exists" in capsys.readouterr().err


def test_convert_refuses_ambiguous_names_and_conflicting_repeats(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, {"a": ["img_1"], "b": ["img_1", "img_2"]})
    source = tmp_path / "rows.json"
    source.write_text(json.dumps({"img_1.jpg": [0.5], "img_2.jpg": [0.5]}))
    out = tmp_path / "out.json"
    assert aspects.main(["convert", str(source), "--out", str(out), "--images", str(images)]) == 2
    assert "'img_1' is the name of several images" in capsys.readouterr().err
    source.write_text(json.dumps({"b/img_1.jpg": [0.5], "img_2.jpg": [0.5], "a/img_1.png": [0.25]}))
    assert aspects.main(["convert", str(source), "--out", str(out), "--images", str(images)]) == 0
    assert read_aspect_file(out).ids == ["a/img_1", "b/img_1", "b/img_2"]

    conflicting = tmp_path / "rows.jsonl"
    conflicting.write_text('{"x.jpg": [0.1]}\n{"x.jpg": [0.2]}\n')
    assert aspects.main(["convert", str(conflicting), "--out", str(tmp_path / "c.json")]) == 2
    assert "appears again with other values" in capsys.readouterr().err
    assert aspects.main(["convert", str(conflicting), "--out", str(tmp_path / "c.json"), "--on-duplicate", "last"]) == 0
    assert read_aspect_file(tmp_path / "c.json").values.tolist() == [[pytest.approx(0.2)]]


# ----------------------------------------------------------------------------- convert: class level
def test_per_class_rows_are_spread_to_images_by_normalised_class_name(tmp_path, capsys):
    images = tmp_path / "images"
    folders = {
        "001.Black_footed_Albatross": ["x1", "x2"],
        "Faces": ["f1"],
        "Faces_easy": ["e1"],
        "American_Crow": ["c1"],
    }
    write_images(images, folders)
    source = tmp_path / "per_class.json"
    rows = {"black footed albatross": [0.1, 0.2], "face": [0.3, 0.4], "American  crow": [0.5, 0.6], "Cardinal": [0, 1]}
    source.write_text(json.dumps(rows))
    out = tmp_path / "spread.json"
    assert aspects.main(["convert", str(source), "--out", str(out), "--images", str(images), "--level", "class"]) == 2
    err = capsys.readouterr().err
    assert "1 classes of" in err and "'Faces_easy' (file has 'face'?)" in err and "--class-map" in err

    # LaViD's Caltech-101 file has one `face` row for the two face folders: several folder classes may share it.
    class_map = tmp_path / "map.tsv"
    class_map.write_text("# folder class\tname in the file\nFaces_easy\tface\n")
    argv = ["convert", str(source), "--out", str(out), "--images", str(images), "--class-map", str(class_map)]
    assert aspects.main(argv) == 0  # --level auto finds every folder class among the keys
    assert "1 file classes are not folder classes" in capsys.readouterr().err  # Cardinal
    table = read_aspect_file(out)
    by_id = dict(zip(table.ids, table.values.tolist()))
    assert by_id["001.Black_footed_Albatross/x1"] == by_id["001.Black_footed_Albatross/x2"] == pytest.approx([0.1, 0.2])
    assert by_id["Faces/f1"] == by_id["Faces_easy/e1"] == pytest.approx([0.3, 0.4])  # "Faces" ~ "face": final s
    assert by_id["American_Crow/c1"] == pytest.approx([0.5, 0.6])
    meta = read_sidecar(out)
    assert meta["level"] == "class" and meta["mapping"]["classes"]["Faces"] == "face"
    assert meta["mapping"]["classes"]["Faces_easy"] == "face" and meta["mapping"]["unused_file_classes"] == ["Cardinal"]
    assert meta["mapping"]["images_per_class"]["001.Black_footed_Albatross"] == 2

    bad_map = tmp_path / "bad.tsv"
    bad_map.write_text("Faces_easy\tfaces easy\n")
    argv[-1] = str(bad_map)
    assert aspects.main([*argv, "--overwrite"]) == 2
    assert "'faces easy', which is not a key of the file" in capsys.readouterr().err


def test_multiple_choice_blocks_flatten_row_major_to_targets_in_0_1(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, {"abyssinian": ["a"], "beagle": ["b"]})
    blocks = {  # 2 questions, 3 and 2 options
        "Abyssinian": [[0.7, 0.2, 0.1], [0.4, 0.6]],
        "beagle": [[0.1, 0.1, 0.8], [1.0, 0.0]],
    }
    source = tmp_path / "mcq.json"
    source.write_text(json.dumps(blocks))
    out = tmp_path / "flat.json"
    assert aspects.main(["convert", str(source), "--out", str(out), "--images", str(images)]) == 0
    table = read_aspect_file(out)
    np.testing.assert_allclose(table.values, [[0.7, 0.2, 0.1, 0.4, 0.6], [0.1, 0.1, 0.8, 1.0, 0.0]], rtol=1e-6)
    assert read_sidecar(out)["mapping"]["multiple_choice"]["options_per_question"] == [3, 2]

    blocks_report = run_json(capsys, "inspect", str(source))["multiple_choice_questions"]
    assert [q["options"] for q in blocks_report] == [3, 2]
    assert blocks_report[0]["mean_row_sum"] == pytest.approx(1.0)
    assert blocks_report[1]["top_option_share"] == 0.5  # option 2 for Abyssinian, option 1 for beagle
    h = -(0.7 * math.log2(0.7) + 0.2 * math.log2(0.2) + 0.1 * math.log2(0.1))
    h2 = -(2 * 0.1 * math.log2(0.1) + 0.8 * math.log2(0.8))
    assert blocks_report[0]["mean_entropy_bits"] == pytest.approx((h + h2) / 2)
    assert blocks_report[1]["mean_entropy_bits"] == pytest.approx((-(0.4 * math.log2(0.4) + 0.6 * math.log2(0.6))) / 2)

    # The flat release layout names the class in the file name: `<class>_<label>_<index>.png`.
    flat = tmp_path / "flat"
    flat.mkdir()
    for stem in ("abyssinian_0_0", "abyssinian_0_1", "beagle_1_0"):
        Image.new("RGB", (8, 8)).save(flat / f"{stem}.png")
    assert aspects.main(["convert", str(source), "--out", str(tmp_path / "release.json"), "--images", str(flat)]) == 0
    flat_table = read_aspect_file(tmp_path / "release.json")
    assert flat_table.ids == ["abyssinian_0_0", "abyssinian_0_1", "beagle_1_0"]
    assert flat_table.values[1].tolist() == pytest.approx([0.7, 0.2, 0.1, 0.4, 0.6])


# ----------------------------------------------------------------------------- audit
def test_audit_scores_agreement_and_auc_per_question(tmp_path, capsys):
    teacher = {"a": [0.9, 0.6], "b": [0.8, 0.4], "c": [0.2, 0.7], "d": [0.1, 0.3]}
    truth = {"a": [1, 1], "b": [1, 0], "c": [0, 0], "d": [0, 1], "e": [1, 1]}
    (tmp_path / "teacher.json").write_text(json.dumps(teacher))
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    common = ["audit", str(tmp_path / "teacher.json"), "--truth", str(tmp_path / "truth.json")]
    result = run_json(capsys, *common, "--min-auc-count", "1")  # the formula on 2 + 2 answers
    assert result["images_joined"] == 4 and result["images_in_truth"] == 5
    q1, q2 = result["questions"]
    assert (q1["agreement"], q1["auc"]) == (1.0, 1.0)
    # q2: answers yes,no,yes,no vs truth 1,0,0,1 -> 2 of 4 agree; positives {0.6, 0.3} beat negatives {0.4, 0.7} 1 of 4.
    assert (q2["agreement"], q2["auc"], q2["truth_rate"], q2["teacher_yes_rate"]) == (0.5, 0.25, 0.5, 0.5)
    assert result["mean_agreement"] == 0.75 and result["mean_auc"] == 0.625
    # By default an AUC needs 10 true and 10 false answers: none here, so no AUC (null) and counts instead.
    strict = run_json(capsys, *common)
    assert strict["auc_min_count"] == 10 and strict["questions_with_auc"] == 0 and strict["mean_auc"] is None
    assert [(q["auc"], q["truth_positives"], q["truth_negatives"]) for q in strict["questions"]] == [
        (None, 2, 2),
        (None, 2, 2),
    ]
    assert aspects.main(common) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mean AUC nan over the 0 questions with at least 10 true and 10 false answers" in lines[1]
    assert lines[3].startswith("       1  4  2/2  0.500  0.500  1.000  - (< 10 a side)  truth column 1")


def test_audit_of_the_demo_teacher_against_its_truth_files(tmp_path, capsys):
    generate_demo(tmp_path / "demo", seed=0, image_size=16, train_per_class=10, test_per_class=1)
    demo = tmp_path / "demo"
    clean = run_json(capsys, "audit", str(demo / "aspects_train.json"), "--truth", str(demo / "truth_train.json"))
    assert clean["images_joined"] == 160 and clean["questions_scored"] == 16
    assert clean["mean_agreement"] > 0.9 and clean["mean_auc"] > 0.95
    # The two questions the simulated teacher answers with 3x the noise are the two it agrees with least.
    questions = (demo / "questions.txt").read_text().splitlines()
    worst = sorted(clean["questions"], key=lambda q: q["agreement"])[:2]
    assert {questions[q["number"] - 1] for q in worst} == set(UNRELIABLE_QUESTIONS)
    generate_demo(tmp_path / "noisy", seed=0, image_size=16, train_per_class=10, test_per_class=1, teacher_noise=4.0)
    noisy = run_json(
        capsys, "audit", str(tmp_path / "noisy" / "aspects_train.json"), "--truth", str(demo / "truth_train.json")
    )
    assert noisy["mean_agreement"] < clean["mean_agreement"] - 0.1  # a worse teacher audits worse


def test_audit_against_cub_attribute_labels(tmp_path, capsys):
    (tmp_path / "images.txt").write_text(
        "1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg\n2 002.Laysan_Albatross/Laysan_0001_545.jpg\n"
        "3 002.Laysan_Albatross/Laysan_0002_920.jpg\n"
    )
    # <image_id> <attribute_id> <is_present> <certainty_id> <time>; attribute 7 = question 1, 300 = question 2.
    labels = [
        "1 7 1 4 9.1",
        "2 7 0 3 2.0",
        "3 7 1 3 1.5",
        "1 300 0 1 2.2",  # not visible: skipped by default
        "2 300 1 4 2.0 extra",  # the released file has a few lines with an extra field
        "3 300 0 4 3.0",
        "1 8 1 4 1.0",  # attribute 8 is not mapped
    ]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    (tmp_path / "map.txt").write_text("# question attribute\n1 7\n2 300\n")
    teacher = {
        "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18": [0.9, 0.9],
        "002.Laysan_Albatross/Laysan_0001_545": [0.2, 0.8],
        "002.Laysan_Albatross/Laysan_0002_920": [0.4, 0.1],
    }
    (tmp_path / "teacher.json").write_text(json.dumps(teacher))
    common = ["audit", str(tmp_path / "teacher.json"), "--cub-attributes", str(tmp_path / "labels.txt")]
    common += ["--cub-images", str(tmp_path / "images.txt"), "--question-map", str(tmp_path / "map.txt")]
    result = run_json(capsys, *common, "--min-auc-count", "1")
    q1, q2 = result["questions"]
    assert q1["truth"] == "CUB attribute 7" and q1["n"] == 3 and q1["agreement"] == pytest.approx(2 / 3)
    assert q1["auc"] == 1.0  # both positives (0.9, 0.4) score above the negative (0.2), though 0.4 says "no"
    assert q2["n"] == 2 and q2["agreement"] == 1.0 and q2["auc"] == 1.0
    kept = run_json(capsys, *common, "--keep-not-visible", "--min-auc-count", "1")["questions"][1]
    assert kept["n"] == 3 and kept["agreement"] == pytest.approx(
        2 / 3
    )  # image 1 now counts as absent; teacher said 0.9


# ----------------------------------------------------------------------------- converted files train
def write_config(tmp_path: Path, train: Path, test: Path, aspects_file: Path, num_classes: int, q: int) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "converted.yaml"
    config.write_text(
        f"""EXPERIMENT: {{PROJECT: "converted", NAME: "run"}}
DATASET: {{TYPE: "image_folder", NUM_CLASS: {num_classes}, ASPECT_JSON: "{aspects_file}",
  TRAIN_IMAGE_PATH: "{train}", TEST_IMAGE_PATH: "{test}", NUM_WORKERS: 0, TEST: {{BATCH_SIZE: 4}}}}
DISTILLER: {{TYPE: "MaKD", STUDENT: "resnet8x4"}}
SOLVER: {{BATCH_SIZE: 4, EPOCHS: 1, LR: 0.01}}
MaKD: {{ASPECT_NUM: {q}}}
LOG: {{PREFIX: "{tmp_path / "output"}", WANDB: False}}
"""
    )
    return config


def train_one_epoch(tmp_path: Path, train: Path, test: Path, aspects_file: Path, num_classes: int, q: int) -> dict:
    config = write_config(tmp_path, train, test, aspects_file, num_classes, q)
    out = tmp_path / "run"
    assert our_train.main([str(config), *FAST, "OUTPUT_DIR", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_a_converted_file_trains(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    write_images(
        train, {"daisy": [f"image_{i:05d}" for i in range(4)], "rose": [f"image_{i:05d}" for i in range(4, 8)]}
    )
    write_images(test, {"daisy": ["t0"], "rose": ["t1"]})
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({f"jpg/image_{i:05d}.jpg": [i / 8, 1 - i / 8, 0.5]}) + "\n" for i in range(8)))
    out = tmp_path / "aspects.json"
    # --config matches the keys against the images exactly as training will list them.
    config = write_config(tmp_path / "run_cfg", train, test, out, num_classes=2, q=3)
    assert aspects.main(["convert", str(source), "--out", str(out), "--config", str(config)]) == 0
    assert read_sidecar(out)["mapping"]["images"] == str(train)
    summary = train_one_epoch(tmp_path, train, test, out, num_classes=2, q=3)
    assert (summary["num_aspects"], summary["num_train_images"], summary["epochs"]) == (3, 8, 1)
    assert summary["aspect_sha256"] == sha256_file(out)


def _lavid_file(path: str, tmp_path: Path) -> Path:
    import subprocess

    target = tmp_path / Path(path).name
    blob = subprocess.run(["git", "-C", str(LAVID), "show", f"HEAD:{path}"], check=True, capture_output=True).stdout
    target.write_bytes(blob)
    return target


@pytest.mark.skipif(not LAVID.is_dir(), reason="LaViD mirror not present")
def test_lavid_per_image_and_per_class_files_convert_and_train(tmp_path):
    # Per image: InternVL2 on Flowers-102, JSON lines keyed "jpg/image_05656.jpg" (with repeated lines).
    per_image = _lavid_file("questions/flowers/logits/internvl2_img.jsonl", tmp_path)
    keys = [json.loads(line).popitem()[0] for line in per_image.read_text().splitlines()[:6]]
    stems = [Path(k).stem for k in keys]
    train, test = tmp_path / "flowers_train", tmp_path / "flowers_test"
    write_images(train, {"class_a": stems[:3], "class_b": stems[3:]})
    write_images(test, {"class_a": ["t0"], "class_b": ["t1"]})
    out = tmp_path / "flowers.json"
    assert aspects.main(["convert", str(per_image), "--out", str(out), "--images", str(train), "--drop-unmatched"]) == 0
    table = read_aspect_file(out)
    assert table.num_aspects == 50 and len(table.ids) == 6
    source_rows = dict(json.loads(line).popitem() for line in per_image.read_text().splitlines()[:6])
    np.testing.assert_allclose(table.values[table.index()[f"class_a/{stems[0]}"]], source_rows[keys[0]], rtol=1e-6)
    summary = train_one_epoch(tmp_path / "a", train, test, out, num_classes=2, q=50)
    assert summary["num_aspects"] == 50 and summary["num_train_images"] == 6

    # Per class: Qwen2.5-7B multiple choice on Oxford-IIIT Pets, 37 classes x 50 questions x 5 options.
    per_class = _lavid_file("questions/oxfordpets/logits/qwen2.5-7b_chat_50-5.json", tmp_path)
    classes = list(json.loads(per_class.read_text()))[:3]  # e.g. "abyssinian", "american bulldog", ...
    folders = {name.replace(" ", "_").title(): [f"{i}" for i in range(2)] for name in classes}
    pets_train, pets_test = tmp_path / "pets_train", tmp_path / "pets_test"
    write_images(pets_train, folders)
    write_images(pets_test, {cls: ["t"] for cls in folders})
    out = tmp_path / "pets.json"
    assert aspects.main(["convert", str(per_class), "--out", str(out), "--images", str(pets_train)]) == 0
    table = read_aspect_file(out)
    assert table.num_aspects == 250 and len(table.ids) == 6
    first = json.loads(per_class.read_text())[classes[0]]
    np.testing.assert_allclose(table.values[0], [p for options in first for p in options], rtol=1e-6)
    meta = read_sidecar(out)
    assert meta["level"] == "class" and meta["mapping"]["multiple_choice"]["options_per_question"] == [5] * 50
    summary = train_one_epoch(tmp_path / "b", pets_train, pets_test, out, num_classes=3, q=250)
    assert summary["num_aspects"] == 250


def test_a_damaged_one_row_per_line_file_is_still_inspected_row_by_row(tmp_path, capsys):
    from makd.formats.aspect_files import write_aspect_file

    path = tmp_path / "aspects.json"
    write_aspect_file(path, {f"img_{i}": [0.1 * i, 0.5] for i in range(5)})
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:12]  # a row cut short, as an editor or a copy might leave it
    path.write_text("\n".join(lines[:-1]) + "\n")  # and the closing brace lost
    report = run_json(capsys, "inspect", str(path))
    assert report["rows"] == 4 and report["problems"]["count"] == 2
    assert "line 4: not a" in report["problems"]["examples"][1]
    assert aspects.main(["convert", str(path), "--out", str(tmp_path / "out.json")]) == 2  # convert refuses it
    assert "2 problems" in capsys.readouterr().err and not (tmp_path / "out.json").exists()


def test_convert_refuses_nan_and_out_of_range_values_naming_them(tmp_path, capsys):
    source = tmp_path / "bad.json"
    source.write_text('{"a.jpg": [0.5, NaN], "b.jpg": [0.5, 1.2], "c.jpg": [0.5, 0.5]}')
    assert aspects.main(["convert", str(source), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "'a.jpg': question 2 is nan" in err and "outside [0, 1]" in err
    assert "tools/aspects.py inspect" in err and not (tmp_path / "out.json").exists()


@pytest.mark.skipif(not LAVID.is_dir(), reason="LaViD mirror not present")
def test_lavid_caltech_per_class_file_pairs_with_the_101_caltech_folders(tmp_path, capsys):
    per_class = _lavid_file("questions/caltech101/logits/qwen2.5-72B_chat_50-5.json", tmp_path)  # 100 class rows
    folders = [c for c in (REPO / "questions" / "classes" / "caltech101.txt").read_text().splitlines() if c]
    images = tmp_path / "caltech"
    write_images(images, {name: ["image_0001"] for name in folders})
    out = tmp_path / "caltech.json"
    argv = ["convert", str(per_class), "--out", str(out), "--images", str(images), "--level", "class"]
    assert aspects.main(argv) == 2  # LaViD merged the two face folders into one "face" row
    err = capsys.readouterr().err
    assert "1 classes of" in err and "'Faces_easy' (file has 'face'?)" in err
    (tmp_path / "map.tsv").write_text("Faces_easy\tface\n")
    assert aspects.main([*argv, "--class-map", str(tmp_path / "map.tsv")]) == 0
    meta = read_sidecar(out)
    assert len(meta["mapping"]["classes"]) == 101 and meta["mapping"]["unused_file_classes"] == []
    assert {meta["mapping"]["classes"][c] for c in ("airplanes", "Leopards", "Motorbikes")} == {
        "airplane",
        "leopard",
        "motorbike",
    }
    assert read_aspect_file(out).num_aspects == 250
