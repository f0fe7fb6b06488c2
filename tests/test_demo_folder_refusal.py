"""Every demo generator refuses a non-empty folder it was not told to replace, and leaves its files alone."""

from __future__ import annotations

import pytest

from makd.demo.classification import DemoFolderExistsError, generate_demo
from makd.demo.detection import generate_detection_demo
from makd.demo.oriented import generate_oriented_demo

GENERATORS = [
    (generate_demo, "demo folder", "--overwrite"),
    (generate_oriented_demo, "demo folder", "--overwrite"),
    (generate_detection_demo, "detection demo folder", "--regenerate"),
]


@pytest.mark.parametrize(("generate", "what", "flag"), GENERATORS)
def test_a_folder_with_the_users_files_is_refused_and_kept(generate, what, flag, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own file")
    pattern = f"{what} .*mine already exists and is not empty; pass overwrite=True \\({flag}\\)"
    with pytest.raises(DemoFolderExistsError, match=pattern):
        generate(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "my own file"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary sibling left behind
