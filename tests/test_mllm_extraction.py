"""The stage-2 command end to end on a tiny model: output + sidecar, bad input, resume, views, shards.

Kill-and-resume: tests/test_faults_extraction.py."""

# ruff: noqa: F811  (the fixtures imported from mllm_fixtures are pytest parameters here)

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mllm_fixtures import (  # noqa: F401
    QUESTIONS,
    image_folder,
    questions_file,
    tiny_hf_model,
    tiny_remote_model,
    write_image_folder,
)

from makd.commands.stage2 import main, merge_main
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar, sha256_file
from makd.formats.image_ids import image_id, list_image_files
from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import load_internvl
from makd.mllm.partial_rows import partial_path

REPO = Path(__file__).resolve().parents[1]
COMMAND = REPO / "InternVL_logits" / "make_makd_logits_json.py"


def run(model, questions, images, output, *extra) -> int:
    argv = ["--model", str(model), "--questions", str(questions), "--images", str(images), "--output", str(output),
            "--max-tiles", "2", "--batch-size", "3", "--dtype", "float32", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    return main([*argv, *map(str, extra)])


def test_writes_rows_for_every_image_with_full_sidecar(tiny_hf_model, questions_file, image_folder, tmp_path, capsys):
    root, ids = image_folder
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "aspects.json"
    assert run(tiny_hf_model, questions_file, root, out) == 0
    table = read_aspect_file(out, expected_aspects=4)
    assert table.ids == ids  # the one image-id rule: relative path, no extension, sorted
    assert not partial_path(out).exists()
    # Each row is that image's scores (computed here independently of the command).
    scorer = InternVLScorer(load_internvl(str(tiny_hf_model), device="cpu", dtype="float32"), max_tiles=2)
    files = [f for f in list_image_files(root) if f.suffix == ".png"]
    from PIL import Image

    direct = scorer.score([Image.open(f).convert("RGB") for f in files], QUESTIONS[:4])
    assert [image_id(f, root) for f in files] == ids
    np.testing.assert_allclose(table.values, direct, atol=1e-6)
    meta = read_sidecar(out)
    assert meta["questions"] == QUESTIONS[:4] and meta["questions_sha256"] == sha256_file(questions_file)
    assert meta["num_images"] == 6 and meta["num_images_planned"] == 7 and meta["tool_version"]
    teacher = meta["teacher"]
    assert teacher["model"] == str(tiny_hf_model) and teacher["backend"] == "hf"
    assert teacher["template"] == "internvl2_5" and teacher["system_message"].startswith("你是书生·万象")
    assert teacher["yes_no_tokens"]["yes_id"] == scorer.tokens.yes_id and teacher["yes_no_tokens"]["no"] == "No"
    assert teacher["tiling"]["max_tiles"] == 2 and teacher["dtype"] == "float32" and teacher["tokens_per_tile"] == 16
    assert [s["id"] for s in meta["skipped_images"]] == ["dog/broken"]
    assert "not an image" in meta["skipped_images"][0]["reason"]  # the same decoder and words as stage 3
    assert "skipped unreadable image" in capsys.readouterr().err


def test_remote_code_checkpoint_through_the_command(tiny_remote_model, questions_file, image_folder, tmp_path):  # noqa: F811
    root, ids = image_folder
    out = tmp_path / "remote.json"
    suffix = "Answer Yes or No."
    assert run(tiny_remote_model, questions_file, root, out, "--limit", "3", "--answer-suffix", suffix) == 0
    assert read_aspect_file(out, expected_aspects=4).ids == ids[:3]
    teacher = read_sidecar(out)["teacher"]
    assert teacher["backend"] == "remote" and teacher["model_class"] == "InternVLChatModel"
    assert teacher["answer_suffix"] == "Answer Yes or No." and teacher["prefix_mode"] == "packed"


def test_strict_stops_at_an_unreadable_image(tiny_hf_model, questions_file, image_folder, tmp_path, capsys):  # noqa: F811
    root, _ = image_folder
    (root / "cat" / "img_000a.png").write_bytes(b"\x89PNG broken")
    assert run(tiny_hf_model, questions_file, root, tmp_path / "a.json", "--strict") == 2
    err = capsys.readouterr().err
    assert "unreadable image" in err and "img_000a.png" in err and "--strict" in err
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty_questions", "questions file is empty"),
        ("numbered_questions", "numbering or bullet"),
        ("missing_images", "folder does not exist"),
        ("no_images", "no image files found"),
        ("bad_shard", "index must be in 0..1"),
        ("bad_output", "must end in .json"),
        ("output_parent_is_a_file", "cannot be written: "),
        ("sidecar_is_a_folder", "sidecar"),
        ("flip_output_exists", "aspects.flip.json already exists"),
        ("bad_views", "unknown view 'rotate'"),
    ],
)
def test_bad_input_stops_before_loading_the_model(case, message, tmp_path, questions_file, image_folder, capsys):  # noqa: F811
    root, _ = image_folder
    questions, images, output, extra = questions_file, root, tmp_path / "out.json", []
    if case == "empty_questions":
        questions = tmp_path / "empty.txt"
        questions.write_text("")
    elif case == "numbered_questions":
        questions = tmp_path / "numbered.txt"
        questions.write_text("1. Is it red?\n")
    elif case == "missing_images":
        images = tmp_path / "nowhere"
    elif case == "no_images":
        images = tmp_path / "empty_dir"
        images.mkdir()
        (images / "notes.txt").write_text("no images here")
    elif case == "bad_shard":
        extra = ["--shard", "2/2"]
    elif case == "bad_output":
        output = tmp_path / "out.txt"
    elif case == "output_parent_is_a_file":
        (tmp_path / "results").write_text("a file where the output folder should be")
        output = tmp_path / "results" / "aspects.json"
    elif case == "sidecar_is_a_folder":
        (tmp_path / "out.json.meta.json").mkdir()
    elif case == "flip_output_exists":
        output = tmp_path / "aspects.json"
        (tmp_path / "aspects.flip.json").write_text("{}")
        extra = ["--views", "flip"]
    elif case == "bad_views":
        extra = ["--views", "rotate"]
    # The model path does not exist: reaching the loader would give another error.
    assert run(tmp_path / "no_model_here", questions, images, output, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_existing_output_and_partial_are_never_overwritten(
    tiny_hf_model, questions_file, image_folder, tmp_path, capsys
):
    root, _ = image_folder
    out = tmp_path / "aspects.json"
    out.write_text("{}")
    assert run(tiny_hf_model, questions_file, root, out) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "{}"
    assert run(tiny_hf_model, questions_file, root, out, "--overwrite", "--limit", "2") == 0
    assert read_aspect_file(out).ids == ["cat/img_001", "cat/img_003"]
    partial_path(tmp_path / "b.json").write_text("{}\n")
    assert run(tiny_hf_model, questions_file, root, tmp_path / "b.json") == 2
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err


def test_resume_refuses_other_settings(tiny_hf_model, questions_file, image_folder, tmp_path, capsys):  # noqa: F811
    from makd.mllm.extraction import plan_extraction, run_settings
    from makd.mllm.items import ImageFolderItems

    root, _ = image_folder
    out = tmp_path / "aspects.json"
    # The header a run with --max-tiles 12 writes; this run asks for 2 tiles.
    scorer = InternVLScorer(load_internvl(str(tiny_hf_model), device="cpu", dtype="float32"), max_tiles=12)
    settings = run_settings(plan_extraction(questions_file, ImageFolderItems(root), out, limit=2), scorer)
    partial_path(out).write_text(json.dumps({"format": "makd-partial-rows-1", "settings": settings}) + "\n")
    assert run(tiny_hf_model, questions_file, root, out, "--resume", "--limit", "2") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")][0]
    assert "made with other settings" in err and "--overwrite" in err
    # The refusal names the setting that changed and both values, not two identical prefixes of "teacher".
    assert "(teacher.tiling.max_tiles: 12 (partial file) != 2 (this run))" in err
    assert not out.exists()


def test_shards_then_merge_equal_one_run(tiny_hf_model, questions_file, tmp_path, monkeypatch, capsys):  # noqa: F811
    root = tmp_path / "images"
    ids = write_image_folder(root, 5)
    whole = tmp_path / "whole.json"
    assert run(tiny_hf_model, questions_file, root, whole) == 0
    shards = [tmp_path / f"part{i}.json" for i in range(3)]
    for i, path in enumerate(shards):
        assert run(tiny_hf_model, questions_file, root, path, "--shard", f"{i}/3") == 0
    sizes = [len(read_aspect_file(p).ids) for p in shards]
    assert sizes == [1, 2, 2] and sum(sizes) == len(ids)  # contiguous slices of the sorted list
    assert read_aspect_file(shards[0]).ids == ids[:1] and read_aspect_file(shards[2]).ids == ids[3:]
    assert merge_main([str(p) for p in shards[:2]] + ["--output", str(tmp_path / "bad.json")]) == 2
    assert "shard(s) 2/3 missing" in capsys.readouterr().err
    assert merge_main([str(shards[0]), str(shards[0]), "--output", str(tmp_path / "bad.json")]) == 2
    assert "is also given as" in capsys.readouterr().err
    flipped = tmp_path / "flipped.json"  # a flip-view shard among main-view shards is refused
    flipped.write_text(shards[1].read_text())
    meta_1 = read_sidecar(shards[1])
    Path(str(flipped) + ".meta.json").write_text(json.dumps({**meta_1, "view": "hflip"}))
    assert merge_main([str(shards[0]), str(flipped), str(shards[2]), "--output", str(tmp_path / "bad.json")]) == 2
    assert f"{flipped}: made with view 'hflip' but {shards[0]} with 'identity'" in capsys.readouterr().err
    merged = tmp_path / "merged.json"
    assert merge_main([str(p) for p in shards] + ["--output", str(merged), "--images", str(root)]) == 0
    assert merged.read_text() == whole.read_text()
    meta = read_sidecar(merged)
    assert meta["shard"] is None and [m["shard"]["index"] for m in meta["merged_from"]] == [0, 1, 2]
    # torchrun-style: --shard auto takes RANK / WORLD_SIZE and names the output per shard.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert run(tiny_hf_model, questions_file, root, tmp_path / "auto.json", "--shard", "auto") == 0
    assert (tmp_path / "auto.shard1of3.json").read_text() == shards[1].read_text()


def test_flip_view_rows_equal_scoring_the_flipped_images(tiny_hf_model, questions_file, image_folder, tmp_path):  # noqa: F811
    from PIL import Image, ImageOps

    root, ids = image_folder
    out = tmp_path / "aspects.json"
    assert run(tiny_hf_model, questions_file, root, out, "--views", "flip", "--limit", "3") == 0
    flip = tmp_path / "aspects.flip.json"
    main_table, flip_table = read_aspect_file(out, expected_aspects=4), read_aspect_file(flip, expected_aspects=4)
    assert main_table.ids == flip_table.ids == ids[:3]
    scorer = InternVLScorer(load_internvl(str(tiny_hf_model), device="cpu", dtype="float32"), max_tiles=2)
    files = list_image_files(root)[:3]
    images = [Image.open(f).convert("RGB") for f in files]
    np.testing.assert_allclose(flip_table.values, scorer.score([ImageOps.mirror(i) for i in images], QUESTIONS[:4]),
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(main_table.values, scorer.score(images, QUESTIONS[:4]), atol=1e-6)
    assert np.abs(flip_table.values - main_table.values).max() > 1e-3  # the flip is not a no-op on these images
    main_meta, flip_meta = read_sidecar(out), read_sidecar(flip)
    assert (main_meta["view"], flip_meta["view"]) == ("identity", "hflip")
    assert flip_meta["questions_sha256"] == main_meta["questions_sha256"] == sha256_file(questions_file)
    assert main_meta["view_outputs"] == {"hflip": "aspects.flip.json"} and flip_meta["main_output"] == "aspects.json"
    assert not partial_path(out).exists() and not partial_path(flip).exists()


def test_a_byte_order_mark_never_reaches_the_prompt(tiny_hf_model, questions_file, image_folder, tmp_path, caplog):  # noqa: F811
    root, _ = image_folder
    clean = tmp_path / "clean.json"
    assert run(tiny_hf_model, questions_file, root, clean, "--limit", "2") == 0
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + questions_file.read_bytes())  # what Notepad saves as "UTF-8 with BOM"
    marked = tmp_path / "marked.json"
    assert run(tiny_hf_model, bom, root, marked, "--limit", "2") == 0
    assert marked.read_bytes() == clean.read_bytes()  # the same prompts, so the same P(yes) to the last digit
    meta = read_sidecar(marked)
    assert meta["questions"][0] == QUESTIONS[0] and meta["questions_sha256"] == sha256_file(questions_file)
    assert "removed the UTF-8 byte-order mark" in caplog.text


def test_outputs_get_the_users_umask(tiny_hf_model, questions_file, image_folder, tmp_path):  # noqa: F811
    from makd.mllm.partial_rows import PartialWriter

    root, _ = image_folder
    old = os.umask(0o027)
    try:
        out = tmp_path / "aspects.json"
        assert run(tiny_hf_model, questions_file, root, out, "--limit", "1") == 0
        writer = PartialWriter(tmp_path / "x.json.partial.jsonl", {"a": 1})
        writer.close()
    finally:
        os.umask(old)
    for path in (out, Path(str(out) + ".meta.json"), tmp_path / "x.json.partial.jsonl"):
        assert path.stat().st_mode & 0o777 == 0o640, path


def test_the_command_script_runs_this_checkout_from_anywhere(questions_file, tmp_path):  # noqa: F811
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(COMMAND), "--model", "m", "--questions", str(questions_file), "--images",
         str(tmp_path / "nowhere"), "--output", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: --images {tmp_path / 'nowhere'}: folder does not exist (check the path)"
    ]


def test_ctrl_c_hint_says_what_is_kept(tmp_path):
    from makd.commands.stage2 import interrupted_hint

    out = tmp_path / "aspects.json"
    argv = ["--model", "m", "--questions", "q.txt", "--images", "img", "--output", str(out)]
    assert interrupted_hint(argv) == "no row was written yet; rerun the same command to start again"
    partial_path(out).write_text("")
    assert interrupted_hint(argv) == (
        f"finished rows are kept in {partial_path(out)}; rerun the same command with --resume to continue from there"
    )
    assert interrupted_hint([*argv, "--resume"]).endswith("; rerun the same command to continue from there")


def test_the_shards_holding_items_are_the_non_empty_slices():
    from makd.mllm.extraction import Shard

    for count in range(1, 9):
        for items in range(0, 13):
            non_empty = [i for i in range(count) if Shard(i, count).select(list(range(items)))]
            assert Shard(0, count).holding(items) == non_empty
    assert Shard(0, 5).holding(3) == [1, 3, 4]  # contiguous slices: with more shards than items, shard 0 is empty


def test_a_dash_value_of_shard_reaches_its_own_check():
    from makd.commands.stage2 import attach_dash_values

    argv = ["--images", "x", "--shard", "-1/2", "--limit", "3", "--shard"]
    assert attach_dash_values(argv, ("--shard",)) == ["--images", "x", "--shard=-1/2", "--limit", "3", "--shard"]
    assert attach_dash_values(["--shard", "--limit"], ("--shard",)) == ["--shard", "--limit"]
