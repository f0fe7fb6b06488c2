"""`tools/aspects.py compare`: two aspect files side by side, numbers computed by hand."""

from __future__ import annotations

import json

import pytest

from makd.commands.aspects import main
from makd.formats.aspect_files import write_aspect_file


def test_compare_gives_the_hand_computed_differences(tmp_path, capsys):
    write_aspect_file(tmp_path / "a.json", {"x": [0.9, 0.2], "y": [0.4, 0.6], "only_a": [0.5, 0.5]})
    write_aspect_file(tmp_path / "b.json", {"x": [0.8, 0.2], "y": [0.6, 0.7], "only_b": [0.1, 0.1]})
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["common_rows"], result["only_in_first"], result["only_in_second"]) == (2, 1, 1)
    first, second = result["questions"]
    assert first["number"] == 1 and first["rows"] == 2
    assert first["max_abs_difference"] == pytest.approx(0.2) and first["mean_abs_difference"] == pytest.approx(0.15)
    assert first["correlation"] == pytest.approx(1.0)  # (0.9, 0.4) vs (0.8, 0.6): both rise together
    assert first["same_side_of_half"] == pytest.approx(0.5)  # y: 0.4 vs 0.6 disagree
    assert second["max_abs_difference"] == pytest.approx(0.1) and second["same_side_of_half"] == 1.0
    assert result["overall"]["max_abs_difference"] == pytest.approx(0.2)
    assert result["overall"]["mean_abs_difference"] == pytest.approx((0.1 + 0.0 + 0.2 + 0.1) / 4)


def test_compare_refuses_files_of_other_questions_or_images_in_one_line(tmp_path, capsys):
    write_aspect_file(tmp_path / "a.json", {"x": [0.9, 0.2]})
    write_aspect_file(tmp_path / "b.json", {"x": [0.9, 0.2, 0.3]})
    write_aspect_file(tmp_path / "c.json", {"z": [0.9, 0.2]})
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "has 2 questions per row" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "share no row id" in err[0]
