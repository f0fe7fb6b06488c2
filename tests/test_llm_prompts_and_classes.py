"""Prompt templates (paper wording, files, placeholders) and where the class names come from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from makd.llm.class_source import ClassSourceError, display_name, read_classes
from makd.llm.prompts import PAPER_GENERATE, PAPER_SELECT, PromptError, PromptSet, fill, load_prompts
from makd.llm.question_pipeline import QuestionTask, first_prompts


def test_defaults_start_with_the_papers_instructions_word_for_word():
    prompts = PromptSet()
    assert PAPER_GENERATE == (
        "The dataset consists of {C} classes and {M} images. The class list is as follows: {CLASS_LIST}, "
        "Generate {N} feature-specific yes or no questions, focusing on clear and distinct aspects of the "
        "objects in the images in the dataset."
    )
    assert PAPER_SELECT == (
        "Select {Q} of the most relevant and distinct questions from the list, focusing on various key "
        "features that distinguish different class in the dataset"
    )
    assert prompts.generate.startswith(PAPER_GENERATE) and prompts.select.startswith(PAPER_SELECT)
    task = QuestionTask(classes=["cat", "dog"], num_images=7, n=30, q=10)
    generate, select = first_prompts(task)
    assert generate.startswith(
        "The dataset consists of 2 classes and 7 images. The class list is as follows: cat, dog, Generate 30 "
    )
    assert '{"questions": [...]}' in generate  # JSON braces are not placeholders
    assert select.startswith("Select 10 of the most relevant")


def test_fill_reports_a_placeholder_without_value():
    assert fill("{N} of {Q}", {"N": 5, "Q": 2}) == "5 of 2"
    with pytest.raises(PromptError, match=r"the select prompt uses \{M\} but no value is known"):
        fill("{M} images", {"M": None}, "the select prompt")


def test_prompts_file_overrides_only_what_it_names(tmp_path: Path):
    path = tmp_path / "prompts.yaml"
    path.write_text("select: |\n  Pick {Q} of these:\n  {QUESTION_LIST}\n", encoding="utf-8")
    prompts = load_prompts(path)
    assert prompts.select == "Pick {Q} of these:\n{QUESTION_LIST}"
    assert prompts.generate == PromptSet().generate
    task = QuestionTask(classes=["a", "b"], num_images=5, n=3, q=2, prompts=prompts)
    assert first_prompts(task, question_list="1. Is it?")[1] == "Pick 2 of these:\n1. Is it?"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("generat: x\n", "unknown key 'generat'; use one of generate, select"),
        ("generate: 'About {K} things'\n", "generate uses unknown placeholder {K}; allowed: {C}, {CLASS_LIST}, {M}"),
        ("select: ''\n", "select must be a non-empty text"),
        ("- a list\n", "expected a mapping"),
        ("generate: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_prompts_files_are_one_line_errors(tmp_path: Path, text, message):
    path = tmp_path / "prompts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptError) as info:
        load_prompts(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_class_file_one_per_line(tmp_path: Path):
    path = tmp_path / "classes.txt"
    path.write_text("# pets\nAbyssinian\n\n  Shiba Inu  \nPug\n", encoding="utf-8")
    classes = read_classes(path)
    assert classes.names == ["Abyssinian", "Shiba Inu", "Pug"] and classes.num_images is None
    path.write_text("cat\ndog\nCat\n", encoding="utf-8")
    with pytest.raises(ClassSourceError, match=r"classes.txt:3: class 'Cat' repeats line 1"):
        read_classes(path)
    with pytest.raises(ClassSourceError, match="does not exist"):
        read_classes(tmp_path / "missing.txt")


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def test_config_with_class_folders_gives_names_and_image_count(tmp_path: Path):
    for split, count in (("train", 3), ("test", 1)):
        for label, folder in enumerate(["001.Black_footed_Albatross", "002.Laysan_Albatross"]):
            for i in range(count):
                _png(tmp_path / split / folder / f"img_{i}.png", 40 * label + i)
    config = tmp_path / "birds.yaml"
    config.write_text(
        f"DATASET:\n  TYPE: image_folder\n  TRAIN_IMAGE_PATH: {tmp_path / 'train'}\n"
        f"  TEST_IMAGE_PATH: {tmp_path / 'test'}\n",
        encoding="utf-8",
    )
    classes = read_classes(config)
    assert classes.names == ["Black footed Albatross", "Laysan Albatross"]
    assert classes.num_images == 6  # training images only


def test_config_with_the_release_png_layout(tmp_path: Path):
    for split, count in (("train", 2), ("test", 1)):
        for label, name in enumerate(["American_Bulldog", "Pug", "Shiba_Inu"]):
            for i in range(count):
                _png(tmp_path / split / f"{name}_{label}_{i}.png", 50 * label)
    config = tmp_path / "pets.yaml"
    config.write_text(
        f"DATASET:\n  TRAIN_IMAGE_PATH: {tmp_path / 'train'}\n  TEST_IMAGE_PATH: {tmp_path / 'test'}\n",
        encoding="utf-8",
    )  # DATASET.TYPE auto detects the layout
    classes = read_classes(config)
    assert classes.names == ["American Bulldog", "Pug", "Shiba Inu"] and classes.num_images == 6


def test_config_pointing_at_nothing_is_one_clear_error(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text(f"DATASET:\n  TYPE: image_folder\n  TRAIN_IMAGE_PATH: {tmp_path / 'nope'}\n", encoding="utf-8")
    with pytest.raises(ClassSourceError) as info:
        read_classes(config)
    assert "cannot index the training images" in str(info.value) and "nope" in str(info.value)


def test_display_name():
    assert display_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert display_name("car_side") == "car side"
    assert display_name("737-800") == "737-800"
