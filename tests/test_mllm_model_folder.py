"""Damaged model folders: a real tiny InternVL (makd.mllm.tiny) copied to tmp_path, then broken the way downloads
and copies break. Each must stop stage 2 with one line that names the file, before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mllm_fixtures import image_folder, questions_file, tiny_hf_model  # noqa: F401

from makd.commands.stage2 import main
from makd.mllm.model_loading import check_model_folder


def damage(folder: Path, case: str) -> str:
    """Break `folder` as `case` says; returns the file the error must name."""
    weights = folder / "model.safetensors"
    if case == "truncated_weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])  # a copy cut off halfway
        return "model.safetensors"
    if case == "truncated_header":
        weights.write_bytes(weights.read_bytes()[:100])
        return "model.safetensors"
    if case == "no_weights":
        weights.unlink()
        return "no weights"
    if case == "missing_shard":
        weights.rename(folder / "model-00001-of-00002.safetensors")
        index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        return "model-00002-of-00002.safetensors"
    if case == "no_tokenizer":
        (folder / "tokenizer.json").unlink()
        return "no tokenizer"
    if case == "broken_config":
        text = (folder / "config.json").read_text()
        (folder / "config.json").write_text(text[: len(text) // 2])
        return "config.json"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["truncated_weights", "truncated_header", "no_weights", "missing_shard", "no_tokenizer", "broken_config"]
)
def test_a_damaged_model_folder_is_one_line_naming_the_file(case, tiny_hf_model, questions_file, image_folder,  # noqa: F811
                                                             tmp_path, capsys):  # fmt: skip
    folder = tmp_path / "model"
    shutil.copytree(tiny_hf_model, folder)
    check_model_folder(folder)  # the intact copy passes
    named = damage(folder, case)
    root, _ = image_folder
    out = tmp_path / "aspects.json"
    argv = ["--model", str(folder), "--questions", str(questions_file), "--images", str(root), "--output", str(out),
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and named in err, err
    assert "Traceback" not in err
    assert not out.exists() and not Path(str(out) + ".partial.jsonl").exists()
