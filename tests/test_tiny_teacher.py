"""`--model tiny` (makd.mllm.tiny_teacher): stage 2 offline through the real loading path, at image and class level,
built once in the user's cache folder, and saying on every run that its numbers mean nothing (issue 21, item 3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mllm_fixtures import write_image_folder

from makd.commands.stage2 import main as stage2_main
from makd.formats.aspect_files import read_aspect_file
from makd.mllm import tiny_teacher
from makd.mllm.tiny_teacher import MARKER, NOTICE, cache_root, tiny_teacher_path

QUESTIONS = ["Is the object red?", "Does it have wings?", "Is it outdoors?"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache folder for the module: the first test builds the models, the others find them."""
    return tmp_path_factory.mktemp("makd_cache")


@pytest.fixture
def in_cache(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("MAKD_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)  # a folder without ./tiny
    return cache


def questions_file(tmp_path: Path, screened: bool = True) -> Path:
    path = tmp_path / "questions.txt"
    path.write_text("".join(q + "\n" for q in QUESTIONS), encoding="utf-8")
    if screened:
        from makd.commands.make_questions import main as stage1_main

        classes = tmp_path / "classes.txt"
        classes.write_text("cat\ndog\n", encoding="utf-8")
        assert stage1_main(["--check", str(path), "--classes", str(classes)]) == 0
    return path


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MAKD_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("MAKD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "makd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "makd"


def test_image_level_tiny_runs_through_the_real_loading_path_and_says_its_numbers_mean_nothing(
    in_cache, tmp_path, capsys
):
    ids = write_image_folder(tmp_path / "images", 4)
    output = tmp_path / "aspects.json"
    args = ["--model", "tiny", "--questions", str(questions_file(tmp_path)), "--images", str(tmp_path / "images"),
            "--output", str(output), "--no-progress"]  # fmt: skip
    assert stage2_main(args) == 0
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 2  # before the model loads and after the file is written
    folder = in_cache / "tiny-internvl-v1"
    assert (folder / MARKER).is_file() and (folder / "config.json").is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "internvl"  # transformers' own class
    rows = read_aspect_file(output)
    assert sorted(rows.ids) == ids and rows.values.shape == (4, 3)
    assert ((rows.values > 0) & (rows.values < 1)).all() and rows.values.std() > 0.01  # answers, not a constant
    meta = json.loads(Path(str(output) + ".meta.json").read_text())
    assert meta["teacher"]["backend"] == "hf"
    assert meta["teacher"]["tiny_teacher"]["note"] == NOTICE  # the file says where its numbers came from
    assert "never screened" not in err

    # A second run finds the cached model (no rebuild) and gives the same numbers.
    built = (folder / "model.safetensors").stat().st_mtime_ns
    again = tmp_path / "again.json"
    assert stage2_main([*args[:-2], str(again), "--no-progress"]) == 0
    assert (folder / "model.safetensors").stat().st_mtime_ns == built
    assert read_aspect_file(again).ids == rows.ids and (read_aspect_file(again).values == rows.values).all()
    assert NOTICE in capsys.readouterr().err


def test_class_level_tiny_is_a_text_only_model(in_cache, tmp_path, capsys):
    classes = tmp_path / "names.txt"
    classes.write_text("sparrow\nrobin\nheron\n", encoding="utf-8")
    output = tmp_path / "class.json"
    assert stage2_main(["--level", "class", "--model", "tiny", "--classes", str(classes), "--questions",
                        str(questions_file(tmp_path, screened=False)), "--output", str(output)]) == 0  # fmt: skip
    assert NOTICE in capsys.readouterr().err
    rows = json.loads(output.read_text())
    assert sorted(rows) == ["heron", "robin", "sparrow"] and all(len(r) == 3 for r in rows.values())
    meta = json.loads(Path(str(output) + ".meta.json").read_text())
    assert meta["teacher"]["model_type"] == "qwen2" and meta["teacher"]["tiny_teacher"]["level"] == "class"
    assert (in_cache / "tiny-causal-lm-v1" / MARKER).is_file()


def test_tiny_refuses_a_server_and_a_folder_of_that_name(in_cache, tmp_path, capsys):
    write_image_folder(tmp_path / "images", 2)
    common = ["--questions", str(questions_file(tmp_path, screened=False)), "--images", str(tmp_path / "images"),
              "--output", str(tmp_path / "out.json")]  # fmt: skip
    assert stage2_main(["--model", "tiny", "--base-url", "http://127.0.0.1:9/v1", *common]) == 2
    assert "--model tiny runs in this process" in capsys.readouterr().err
    (tmp_path / "tiny").mkdir()
    assert stage2_main(["--model", "tiny", *common]) == 2
    assert "./tiny exists here too" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_a_cache_folder_that_is_not_a_tiny_teacher_is_refused(monkeypatch, tmp_path):
    from makd.mllm.errors import ExtractionError

    monkeypatch.setenv("MAKD_CACHE_DIR", str(tmp_path))
    (tmp_path / "tiny-internvl-v1").mkdir()
    with pytest.raises(ExtractionError, match="holds no tiny teacher"):
        tiny_teacher_path("image")


def test_a_build_that_lost_the_race_keeps_the_first_model(monkeypatch, tmp_path):
    """Two processes building at once: the second rename finds the folder taken and keeps it (nothing half-built)."""
    monkeypatch.setenv("MAKD_CACHE_DIR", str(tmp_path))
    final = tmp_path / "tiny-causal-lm-v1"

    def build_and_lose(path, *args, **kwargs):
        final.mkdir()
        (final / MARKER).write_text("{}", encoding="utf-8")  # the other process finished first
        Path(path, "weights").write_text("ours", encoding="utf-8")

    monkeypatch.setattr(tiny_teacher, "save_tiny_causal_lm", build_and_lose)
    assert tiny_teacher_path("class") == final
    assert not (final / "weights").exists()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]  # our temporary folder is gone
    assert os.listdir(final) == [MARKER]
