"""Teacher cost in stage-2 sidecars: prompts scored, tokens and seconds, counted independently here, and summed
over an interrupted run and its --resume, over shards merged, at image level and at class level."""

# ruff: noqa: F811  (the fixtures imported from mllm_fixtures are pytest parameters here)

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mllm_fixtures import QUESTIONS, questions_file, tiny_hf_model, write_image_folder  # noqa: F401
from PIL import Image

import makd.mllm.class_level as class_level
import makd.mllm.extraction as extraction
from makd.commands.stage2 import main, merge_main
from makd.demo.tiny_causal_lm import build_tiny_causal_lm
from makd.formats.files import read_sidecar, sidecar_path
from makd.formats.image_ids import list_image_files
from makd.mllm.cost import COST_FIELDS, add_costs, total_cost
from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import load_internvl
from makd.mllm.partial_rows import partial_path, read_partial
from makd.mllm.prefix_scoring import split_shared_prefix

COUNTS = ("prompts_scored", "prompt_tokens", "tokens_processed")


def run(model, questions, images, output, *extra) -> int:
    argv = ["--model", str(model), "--questions", str(questions), "--images", str(images), "--output", str(output),
            "--max-tiles", "2", "--batch-size", "3", "--dtype", "float32", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    return main([*argv, *map(str, extra)])


def counts(cost: dict) -> dict:
    return {k: cost[k] for k in COUNTS}


def expected_image_cost(model: Path, root: Path, questions: list[str], mode: str, batch: int) -> dict:
    """Tokens counted here from the prompts themselves: every prompt whole, and what the shared prefix runs."""
    scorer = InternVLScorer(load_internvl(str(model), device="cpu", dtype="float32"), max_tiles=2)
    prompts = tokens = processed = 0
    for path in list_image_files(root):
        tiles = scorer.prepare(Image.open(path).convert("RGB")).shape[0]
        ids = scorer.prompt_ids(questions, tiles)
        split = split_shared_prefix(ids)
        assert all(len(split.prefix) + len(s) == len(i) for s, i in zip(split.suffixes, ids))
        prompts += len(ids)
        tokens += sum(len(i) for i in ids)
        processed += len(split.prefix)
        for start in range(0, len(ids), batch):
            lengths = [len(s) for s in split.suffixes[start : start + batch]]
            processed += sum(lengths) if mode == "packed" else len(lengths) * max(lengths)
    return {"prompts_scored": prompts, "prompt_tokens": tokens, "tokens_processed": processed}


@pytest.mark.parametrize("mode", ["packed", "expanded"])
def test_image_level_cost_counts_every_prompt_and_the_prefix_once(tiny_hf_model, questions_file, tmp_path, mode):
    root = tmp_path / "images"
    write_image_folder(root, 3)
    out = tmp_path / "aspects.json"
    assert run(tiny_hf_model, questions_file, root, out, "--prefix-mode", mode) == 0
    meta = read_sidecar(out)
    expected = expected_image_cost(tiny_hf_model, root, QUESTIONS[:4], mode, batch=3)
    assert counts(meta["cost"]) == expected and counts(meta["cost_this_run"]) == expected
    assert expected["prompts_scored"] == 3 * 4
    # the shared image prefix runs once per image: far fewer tokens than 4 whole prompts
    assert expected["tokens_processed"] < 0.5 * expected["prompt_tokens"]
    assert meta["cost"]["seconds"] > 0 and meta["resumed_rows"] == 0


def test_interrupted_run_and_its_resume_add_up_to_one_run(tiny_hf_model, questions_file, tmp_path, monkeypatch):
    root = tmp_path / "images"
    write_image_folder(root, 5)
    whole = tmp_path / "whole.json"
    assert run(tiny_hf_model, questions_file, root, whole) == 0
    out = tmp_path / "aspects.json"
    real_step, calls = extraction._score_step, []

    def stop_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(extraction, "_score_step", stop_at_the_third_step)
    assert run(tiny_hf_model, questions_file, root, out) == 130  # Ctrl-C: the rows so far are kept
    monkeypatch.setattr(extraction, "_score_step", real_step)
    state = read_partial(partial_path(out))
    assert len(state.rows) == 2 and state.cost["prompts_scored"] == 2 * 4  # one cost record per step
    assert run(tiny_hf_model, questions_file, root, out, "--resume") == 0
    meta, unbroken = read_sidecar(out), read_sidecar(whole)
    assert meta["resumed_rows"] == 2 and meta["cost_this_run"]["prompts_scored"] == 3 * 4
    assert counts(meta["cost"]) == counts(unbroken["cost"])  # both runs together cost what one run does
    assert meta["cost"]["seconds"] >= meta["cost_this_run"]["seconds"]
    assert out.read_text() == whole.read_text()


def test_merged_shards_sum_their_costs(tiny_hf_model, questions_file, tmp_path):
    root = tmp_path / "images"
    write_image_folder(root, 5)
    whole = tmp_path / "whole.json"
    assert run(tiny_hf_model, questions_file, root, whole) == 0
    shards = [tmp_path / f"part{i}.json" for i in range(2)]
    for i, path in enumerate(shards):
        assert run(tiny_hf_model, questions_file, root, path, "--shard", f"{i}/2") == 0
    merged = tmp_path / "merged.json"
    assert merge_main([str(p) for p in shards] + ["--output", str(merged)]) == 0
    meta = read_sidecar(merged)
    parts = [read_sidecar(p)["cost"] for p in shards]
    assert counts(meta["cost"]) == counts(read_sidecar(whole)["cost"])
    assert meta["cost"]["seconds"] == pytest.approx(sum(p["seconds"] for p in parts), abs=2e-3)
    assert "cost_this_run" not in meta
    # a shard from an older makd (no cost recorded) leaves the total unknown, never undercounted
    old = read_sidecar(shards[1])
    del old["cost"]
    sidecar_path(shards[1]).write_text(json.dumps(old))
    assert merge_main([str(p) for p in shards] + ["--output", str(merged), "--overwrite"]) == 0
    assert read_sidecar(merged)["cost"] == {k: None for k in COST_FIELDS}


def test_flip_view_cost_is_recorded_once(tiny_hf_model, questions_file, tmp_path):
    root = tmp_path / "images"
    write_image_folder(root, 2)
    out = tmp_path / "aspects.json"
    assert run(tiny_hf_model, questions_file, root, out, "--views", "flip") == 0
    main_meta, flip_meta = read_sidecar(out), read_sidecar(tmp_path / "aspects.flip.json")
    assert main_meta["cost"]["prompts_scored"] == 2 * 2 * 4  # both views, one pass
    assert flip_meta["cost"] is None and "aspects.json" in flip_meta["cost_note"]


def test_class_level_resume_sums_the_cost_of_both_runs(tmp_path, monkeypatch):
    model = build_tiny_causal_lm(tmp_path / "lm")
    questions, classes = tmp_path / "q.txt", tmp_path / "classes.txt"
    questions.write_text("Is the <object> furry?\nDoes a <object> swim?\n", encoding="utf-8")
    classes.write_text("".join(f"class {i}\n" for i in range(5)), encoding="utf-8")

    def argv(out: Path, *extra: str) -> list[str]:
        return ["--level", "class", "--model", str(model), "--questions", str(questions), "--classes", str(classes),
                "--output", str(out), "--batch-size", "1", "--device", "cpu", *extra]  # fmt: skip

    whole = tmp_path / "whole.json"
    assert main(argv(whole)) == 0
    out = tmp_path / "class.json"
    real_row, calls = class_level.class_row, []

    def stop_at_the_fourth_class(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_row(*args, **kwargs)

    monkeypatch.setattr(class_level, "class_row", stop_at_the_fourth_class)
    assert main(argv(out)) == 130
    monkeypatch.setattr(class_level, "class_row", real_row)
    assert main(argv(out, "--resume")) == 0
    meta, unbroken = read_sidecar(out), read_sidecar(whole)
    assert meta["resumed_rows"] == 3 and meta["cost_this_run"]["prompts_scored"] == 2 * 2
    assert counts(meta["cost"]) == counts(unbroken["cost"]) and unbroken["cost"]["prompts_scored"] == 5 * 2
    assert json.loads(out.read_text()) == json.loads(whole.read_text())


def test_cost_sums_keep_unknown_fields_unknown():
    a = {"prompts_scored": 2, "prompt_tokens": 10, "tokens_processed": 12, "seconds": 0.5}
    b = {"prompts_scored": 3, "prompt_tokens": None, "tokens_processed": 7, "seconds": 1.25}
    assert add_costs([a, b]) == {"prompts_scored": 5, "prompt_tokens": None, "tokens_processed": 19, "seconds": 1.75}
    assert add_costs([None, None]) is None
    assert total_cost(None, 0, a) == a
    assert total_cost(None, 4, a) == {k: None for k in COST_FIELDS}  # resumed rows of unknown cost
