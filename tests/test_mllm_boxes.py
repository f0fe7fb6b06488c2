"""Stage 2 per box (issue 13, item 2): every ground-truth box of a tiny COCO set scored by the real command on a
tiny random InternVL, as a crop or on the whole image; skipped small boxes, resume after kills, shards."""

# ruff: noqa: F811  (the fixtures imported from mllm_fixtures are pytest parameters here)

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from coco_fixtures import tiny_coco_dict, write_coco
from mllm_fixtures import QUESTIONS, questions_file, tiny_hf_model  # noqa: F401
from PIL import Image

from makd.commands.stage2 import main, merge_main
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar, sha256_file
from makd.mllm.box_items import DEFAULT_PROMPTS, crop_region, mark_box, mark_line_width
from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import load_internvl
from makd.mllm.partial_rows import partial_path

TESTS = Path(__file__).resolve().parent


def _common(model: Path, questions: Path) -> list[str]:
    return ["--model", str(model), "--questions", str(questions), "--max-tiles", "2", "--batch-size", "3",
            "--dtype", "float32", "--device", "cpu", "--no-progress"]  # fmt: skip


def run_boxes(model, questions, instances, images, output, *extra) -> int:
    return main([*_common(model, questions), "--boxes", str(instances), "--images", str(images),
                 "--output", str(output), *map(str, extra)])  # fmt: skip


@pytest.fixture
def coco_set(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny set plus a box on image 11: boxes 5#101 (64x48), 5#102 (20x16), 9#200 (12x6), 11#300 (20x20)."""
    data = tiny_coco_dict()
    data["annotations"].append({"id": 300, "image_id": 11, "category_id": 7, "bbox": [4, 4, 20, 20]})
    return write_coco(tmp_path / "coco", data)


def test_crop_regions_and_the_marked_box():
    # margin 0.25 of a 20x16 box: 5 px left/right, 4 px top/bottom; outwards to whole pixels; clipped.
    assert crop_region((10.0, 8.0, 30.0, 24.0), 0.25, 64, 48) == (5, 4, 35, 28)
    assert crop_region((10.5, 8.2, 29.6, 23.1), 0.0, 64, 48) == (10, 8, 30, 24)
    assert crop_region((4.0, 4.0, 24.0, 24.0), 0.25, 40, 40) == (0, 0, 29, 29)
    assert mark_line_width(64, 48) == 2 and mark_line_width(900, 300) == 6
    pixels = np.random.default_rng(0).integers(0, 200, size=(48, 64, 3), dtype=np.uint8)  # no pure red in it
    image = Image.fromarray(pixels)
    marked = np.asarray(mark_box(image, (10.0, 8.0, 30.0, 24.0)))
    assert np.array_equal(np.asarray(image), pixels)  # drawn on a copy
    red = np.all(marked == (255, 0, 0), axis=2)
    ring = np.zeros_like(red)
    ring[6:26, 8:32] = True  # 2 px outside the box's pixels 10..29 x 8..23
    ring[8:24, 10:30] = False
    assert np.array_equal(red, ring)
    assert np.array_equal(marked[~ring], pixels[~ring])  # the object and everything else untouched


def test_crop_view_scores_each_box_as_its_crop_saved_as_an_image(tiny_hf_model, questions_file, coco_set, tmp_path,
                                                                 capsys):  # fmt: skip
    instances, images = coco_set
    out = tmp_path / "boxes.json"
    assert run_boxes(tiny_hf_model, questions_file, instances, images, out, "--box-margin", "0.25") == 0
    err = capsys.readouterr().err
    assert "skipping 1 of 4 boxes under 8 px on the shorter side (listed in the sidecar" in err
    assert "3 boxes x 4 questions" in err
    boxes = read_aspect_file(out, expected_aspects=4)
    assert boxes.ids == ["11#300", "5#101", "5#102"]  # the one box-id rule; crowd box 9#201 not scored

    # The same crops, cut by hand and saved as PNG files, scored at image level by the same command.
    crops = tmp_path / "crops"
    crops.mkdir()
    for key, name, region in [("5#101", "sub/a.png", (0, 0, 64, 48)), ("5#102", "sub/a.png", (5, 4, 35, 28)),
                              ("11#300", "c.png", (0, 0, 29, 29))]:  # fmt: skip
        Image.open(images / name).convert("RGB").crop(region).save(crops / f"{key}.png")
    flat = tmp_path / "crops.json"
    assert main([*_common(tiny_hf_model, questions_file), "--images", str(crops), "--output", str(flat)]) == 0
    images_level = read_aspect_file(flat)
    assert images_level.ids == boxes.ids
    np.testing.assert_allclose(boxes.values, images_level.values, atol=1e-6, rtol=0)
    assert np.ptp(boxes.values) > 0.05  # the rows are not all alike, so the comparison bites

    meta = read_sidecar(out)
    assert meta["item"] == "box" and meta["num_images"] == 3 and meta["num_images_planned"] == 3
    assert "prompts" not in meta  # the crop view asks the questions as they are
    box_meta = meta["boxes"]
    assert box_meta["view"] == "crop" and box_meta["margin"] == 0.25 and box_meta["min_box_size"] == 8
    assert box_meta["prompt"] == "{question}" and box_meta["instances_sha256"] == sha256_file(instances)
    assert box_meta["small_boxes_skipped"] == [{"id": "9#200", "width": 12.0, "height": 6.0}]
    assert (box_meta["num_boxes_in_file"], box_meta["num_boxes_large_enough"]) == (4, 3)
    assert box_meta["num_crowd_boxes_not_scored"] == 1
    assert [c["name"] for c in box_meta["categories"]] == ["square", "circle", "triangle"]

    # A smaller minimum keeps the 12x6 box.
    small = tmp_path / "small.json"
    assert run_boxes(tiny_hf_model, questions_file, instances, images, small, "--min-box-size", "5") == 0
    assert read_aspect_file(small).ids == ["11#300", "5#101", "5#102", "9#200"]
    assert read_sidecar(small)["boxes"]["small_boxes_skipped"] == []


def test_whole_view_asks_about_the_red_box_on_the_whole_image(tiny_hf_model, questions_file, coco_set, tmp_path,
                                                              capsys):  # fmt: skip
    instances, images = coco_set
    out, crop = tmp_path / "whole.json", tmp_path / "crop.json"
    assert run_boxes(tiny_hf_model, questions_file, instances, images, out, "--boxes-view", "whole") == 0
    assert run_boxes(tiny_hf_model, questions_file, instances, images, crop) == 0
    whole = read_aspect_file(out)
    meta = read_sidecar(out)
    prompts = [DEFAULT_PROMPTS["whole"].replace("{question}", q) for q in QUESTIONS[:4]]
    assert meta["prompts"] == prompts and meta["questions"] == QUESTIONS[:4]
    assert prompts[0] == "Answer about the object inside the red box only. Is the object red?"
    assert meta["boxes"]["view"] == "whole" and meta["boxes"]["mark"]["colour"] == [255, 0, 0]
    assert meta["questions_sha256"] == sha256_file(questions_file)  # the questions file, not the prompts

    scorer = InternVLScorer(load_internvl(str(tiny_hf_model), device="cpu", dtype="float32"), max_tiles=2)
    a, c = Image.open(images / "sub/a.png").convert("RGB"), Image.open(images / "c.png").convert("RGB")
    marked = [mark_box(c, (4.0, 4.0, 24.0, 24.0)), mark_box(a, (0.0, 0.0, 64.0, 48.0)), mark_box(a, (10, 8, 30, 24))]
    np.testing.assert_allclose(whole.values, scorer.score(marked, prompts), atol=1e-6, rtol=0)
    assert whole.ids == read_aspect_file(crop).ids  # the same boxes in both views, so they compare row by row
    assert np.abs(whole.values - read_aspect_file(crop).values).max() > 1e-3  # the switch changes what is seen

    # The prompt is a setting: resuming a run made with the default prompt under another one is refused.
    from makd.mllm.box_items import CocoBoxItems
    from makd.mllm.extraction import plan_extraction, run_settings

    other = tmp_path / "other.json"
    source = CocoBoxItems(instances, images, view="whole")
    header = {"format": "makd-partial-rows-1", "settings": run_settings(plan_extraction(questions_file, source, other),
                                                                          scorer)}  # fmt: skip
    partial_path(other).write_text(json.dumps(header) + "\n")
    args = ("--boxes-view", "whole", "--box-prompt", "Look at the red box. {question}", "--resume")
    assert run_boxes(tiny_hf_model, questions_file, instances, images, other, *args) == 2
    changed = 'boxes.prompt: "Answer about the object inside the red box only. {question}" (partial file) != '
    assert changed + '"Look at the red box. {question}" (this run)' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--boxes-view", "whole"], "--boxes-view is a box-level option; pass --boxes INSTANCES.json too"),
        (["--boxes", "{instances}", "--box-margin", "-0.1"], "--box-margin -0.1: must be >= 0"),
        (["--boxes", "{instances}", "--min-box-size", "-1"], "--min-box-size -1.0: must be >= 0 pixels"),
        (["--boxes", "{instances}", "--box-prompt", "no field"], "--box-prompt 'no field': must hold {question}"),
        (["--boxes", "{instances}", "--min-box-size", "100"], "none of its 4 boxes is at least 100 px"),
        (["--boxes", "{absent}"], "COCO instances file"),
        (["--boxes", "{broken}"], "not valid JSON"),
    ],
)
def test_bad_box_options_stop_before_the_model_loads(extra, message, coco_set, questions_file, tmp_path, capsys):
    instances, images = coco_set
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    names = {"instances": instances, "absent": tmp_path / "absent.json", "broken": tmp_path / "broken.json"}
    extra = [e.format(**names) if e.startswith("{") and e.endswith("}") and e[1:-1] in names else e for e in extra]
    argv = [*_common(tmp_path / "no-model", questions_file), "--images", str(images), "--output",
            str(tmp_path / "o.json"), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "no-model" not in err[0]  # refused before any model load was tried


def test_box_shards_merge_into_one_run(tiny_hf_model, questions_file, coco_set, tmp_path, capsys):
    instances, images = coco_set
    whole = tmp_path / "all.json"
    assert run_boxes(tiny_hf_model, questions_file, instances, images, whole) == 0
    parts = [tmp_path / f"part{i}.json" for i in range(2)]
    for i, part in enumerate(parts):
        assert run_boxes(tiny_hf_model, questions_file, instances, images, part, "--shard", f"{i}/2") == 0
    assert [read_aspect_file(p).ids for p in parts] == [["5#101"], ["11#300", "5#102"]]  # slices by image id
    merged = tmp_path / "merged.json"
    assert merge_main([*map(str, parts), "--output", str(merged)]) == 0
    assert merged.read_bytes() == whole.read_bytes()
    assert merge_main([*map(str, parts), "--output", str(tmp_path / "m2.json"), "--images", str(images)]) == 2
    assert "box-level shards are checked against the box count" in capsys.readouterr().err
    other = tmp_path / "other.json"  # a shard made with another margin does not merge
    margin = ("--box-margin", 0.3)
    assert run_boxes(tiny_hf_model, questions_file, instances, images, other, "--shard", "1/2", *margin) == 0
    assert merge_main([str(parts[0]), str(other), "--output", str(tmp_path / "m3.json")]) == 2
    assert f"made with boxes.margin 0.3 but {parts[0]} with 0.1" in capsys.readouterr().err


def test_killed_box_runs_resume_to_the_same_bytes(tiny_hf_model, questions_file, tmp_path):
    """The fault driver of test_faults_extraction.py (real SIGKILLs in forked children) on a box-level run."""
    rng = np.random.default_rng(5)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    for image_id in range(1, 5):
        data["images"].append({"id": image_id, "file_name": f"im{image_id}.png", "width": 90, "height": 70})
        for k in range(3):
            x, y = (int(v) for v in rng.integers(0, 40, size=2))
            data["annotations"].append({"id": 10 * image_id + k, "image_id": image_id, "category_id": 1 + k % 2,
                                        "bbox": [x, y, 20 + 5 * k, 15 + 3 * k]})  # fmt: skip
    instances, images = write_coco(tmp_path / "coco", data)
    common = [*_common(tiny_hf_model, questions_file), "--boxes", str(instances), "--images", str(images),
              "--views", "flip", "--box-margin", "0.2"]  # fmt: skip
    unbroken = tmp_path / "unbroken.json"
    assert main([*common, "--output", str(unbroken)]) == 0
    assert len(read_aspect_file(unbroken).ids) == 12

    output, flip = tmp_path / "aspects.json", tmp_path / "aspects.flip.json"
    faults = [{"kind": "sigint", "rows": 1}, {"kind": "mid_row", "row": 2}, {"kind": "rows", "rows": 2, "delay": 0.01},
              {"kind": "open_tmp", "name": output.name}]  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"argv": [*common, "--output", str(output), "--resume"], "faults": faults,
                                "output": str(output), "logs": str(logs)}))  # fmt: skip
    # The driver imports makd before it puts its checkout first on sys.path, so name this checkout here.
    path = os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path}
    driver = TESTS / "test_faults_extraction.py"
    done = subprocess.run([sys.executable, str(driver), str(plan)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ended = json.loads(done.stdout.strip().splitlines()[-1])
    assert [e.get("signal") or e.get("exit") for e in ended] == [130, 9, 9, 9], ended
    assert not output.exists() or partial_path(output).exists()  # the last kill came before the partial went

    assert main([*common, "--output", str(output), "--resume"]) == 0
    assert output.read_bytes() == unbroken.read_bytes()
    assert flip.read_bytes() == (tmp_path / "unbroken.flip.json").read_bytes()
    assert not partial_path(output).exists() and read_sidecar(output)["resumed_rows"] == 12


def test_boxes_of_an_unreadable_image_are_listed_and_strict_stops(tiny_hf_model, questions_file, coco_set, tmp_path,
                                                                  capsys):  # fmt: skip
    instances, images = coco_set
    (images / "c.png").write_bytes(b"not an image")
    out = tmp_path / "boxes.json"
    assert run_boxes(tiny_hf_model, questions_file, instances, images, out) == 0
    assert read_aspect_file(out).ids == ["5#101", "5#102"]
    skipped = read_sidecar(out)["skipped_images"]
    assert [s["id"] for s in skipped] == ["11#300"] and "not an image" in skipped[0]["reason"]
    assert "warning: skipped unreadable image " in capsys.readouterr().err
    assert run_boxes(tiny_hf_model, questions_file, instances, images, tmp_path / "s.json", "--strict") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: unreadable image ") and "c.png (box 11#300)" in err and "--strict stops here" in err
