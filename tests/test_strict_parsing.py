"""The strict readers every input goes through: JSON and YAML refuse a key written twice (naming the mapping and both
lines), text lists remove a BOM and CRLF with a warning, ignore blank lines and refuse a repeated entry."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import yaml

from makd.formats.errors import ArtifactError, DuplicateKeyError
from makd.formats.files import read_json, read_sidecar
from makd.formats.strict_json import loads_json, locate_duplicate_key
from makd.formats.strict_yaml import load_yaml
from makd.formats.text_lists import parse_text_list, read_text_list


@pytest.mark.parametrize(
    "text, where, key, lines",
    [
        ('{"images": [],\n "annotations": [1],\n "categories": [],\n "annotations": []}', "", "annotations", (2, 4)),
        ('{"annotations": [{"id": 1},\n {"id": 2, "bbox": [0, 0, 1, 1],\n  "id": 3}]}', "annotations[1]", "id", (2, 3)),
        ('{"a": {"b": {"c": 1, "c": 2}}}', "a.b", "c", (1, 1)),
        ('[{"k": "}\\"{,"}, {"k": 1,\n"k": 2}]', "[1]", "k", (1, 2)),  # brackets and quotes inside strings
        ('{"caf\\u00e9": 1,\n "café": 2}', "", "café", (1, 2)),  # the same key, escaped once and not once
    ],
)
def test_json_refuses_a_repeated_key_naming_its_object_and_both_lines(text, where, key, lines):
    assert locate_duplicate_key(text) == (where, key, lines)
    with pytest.raises(DuplicateKeyError) as caught:
        loads_json(text, "x.json")
    err = caught.value
    assert (err.key, err.where, err.lines) == (key, where, lines)
    message = str(err)
    assert message.startswith(f"x.json: key {key!r} appears twice ")
    assert (f"in {where} " if where else "at the top level ") in message
    assert ("line 1 (twice)" if lines == (1, 1) else f"lines {lines[0]} and {lines[1]}") in message
    assert "\n" not in message


def test_json_without_repeats_parses_as_json_does():
    text = json.dumps({"a": [1, 2.5, {"b": None, "c": "d"}], "e": {"a": 1}, "f": [{"a": 1}, {"a": 2}]})
    assert loads_json(text, "x.json") == json.loads(text)
    assert locate_duplicate_key(text) is None  # the same key in sibling objects is no repeat
    with pytest.raises(json.JSONDecodeError):
        loads_json('{"a": 1,', "x.json")


def test_read_json_and_sidecars_are_strict_and_one_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"num_images": 3,\n"questions_sha256": "aa",\n"questions_sha256": "bb"}\n')
    (tmp_path / "a.json.meta.json").write_bytes(path.read_bytes())
    for read in (lambda: read_json(path, "sidecar"), lambda: read_sidecar(tmp_path / "a.json")):
        with pytest.raises(DuplicateKeyError, match=r"key 'questions_sha256' appears twice at the top level \(lines 2"):
            read()
    path.write_text('{"a": 1')
    with pytest.raises(ArtifactError, match=r"a.json: not valid JSON \(Expecting"):
        read_json(path, "thing")
    with pytest.raises(ArtifactError, match="thing .*none.json does not exist"):
        read_json(tmp_path / "none.json", "thing")


def test_read_json_removes_a_byte_order_mark_with_a_warning(tmp_path, caplog):
    path = tmp_path / "t.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": [1, 0]}')
    with caplog.at_level(logging.WARNING):
        assert read_json(path, "--truth") == {"a": [1, 0]}
    assert "removed the UTF-8 byte-order mark" in caplog.text


@pytest.mark.parametrize(
    "text, full, lines",
    [
        ("SOLVER:\n  LR: 0.1\nDATASET:\n  NUM_WORKERS: 0\nSOLVER:\n  EPOCHS: 2\n", "SOLVER", (1, 5)),
        ("conditions:\n  baseline: {}\n  makd: {MaKD.ALPHA: 4}\n  baseline:\n    MaKD.TARGETS: random\n",
         "conditions.baseline", (2, 4)),  # fmt: skip
        ("runs:\n- {seed: 1, seed: 2}\n", "runs[0].seed", (2, 2)),
        ("1: a\n2: b\n1: c\n", "1", (1, 3)),
    ],
)
def test_yaml_refuses_a_repeated_key_naming_its_path_and_both_lines(text, full, lines):
    with pytest.raises(DuplicateKeyError) as caught:
        load_yaml(text, "c.yaml")
    message = str(caught.value)
    assert message.startswith(f"c.yaml: {full} is written twice (")
    assert ("line 2 (twice)" if lines == (2, 2) else f"lines {lines[0]} and {lines[1]}") in message
    assert caught.value.lines == lines and "\n" not in message


def test_yaml_without_repeats_loads_as_safe_load_does():
    text = "a: 1\n'1': x\n1: y\nb: &base {x: 1, y: 2}\nc:\n  <<: *base\n  x: 3\nd: [*base, *base]\ne: ~\n"
    assert load_yaml(text, "c.yaml") == yaml.safe_load(text)
    assert load_yaml(text, "c.yaml")["c"] == {"x": 3, "y": 2}  # a merge overridden is YAML's inheritance, no repeat
    assert load_yaml("", "c.yaml") is None
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1,\n", "c.yaml")
    with pytest.raises(yaml.YAMLError):  # unsafe tags stay refused
        load_yaml("a: !!python/object/apply:os.system ['true']\n", "c.yaml")


def test_a_text_list_removes_bom_and_crlf_with_warnings_ignores_blank_lines(caplog):
    text = "\ufeffcat\r\n\r\n  dog \r\n# not a comment here\r\n"
    with caplog.at_level(logging.WARNING):
        listed = parse_text_list(text, "c.txt", entry="class")
    assert listed.entries == ["cat", "dog", "# not a comment here"] and listed.lines == [1, 3, 4]
    assert listed.trimmed == [3]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "c.txt: removed the UTF-8 byte-order mark at the start of the file (it is not part of any class)",
        "c.txt: read its Windows (CRLF) or CR line ends as plain line ends",
    ]
    assert parse_text_list("a\n# b\nb\n", "c.txt", comments=True).entries == ["a", "b"]


def test_a_text_list_refuses_a_repeat_and_an_inner_bom_naming_lines():
    with pytest.raises(ArtifactError, match=r"^c.txt:4: class 'CAT' repeats line 1; list each class once$"):
        parse_text_list("\ufeffcat\ndog\n\nCAT\n", "c.txt", entry="class", same=str.casefold)
    with pytest.raises(ArtifactError, match=r"c.txt:2: holds a byte-order mark \(U\+FEFF\) inside the text"):
        parse_text_list("cat\n\ufeffdog\n", "c.txt")

    class Custom(Exception):
        pass

    with pytest.raises(Custom, match="c.txt:2: entry 'a' repeats line 1"):
        parse_text_list("a\na\n", "c.txt", error=Custom)


def test_read_text_list_keeps_the_bytes_sha256_and_names_a_missing_file(tmp_path):
    path = tmp_path / "split.txt"
    path.write_bytes(b"a/1\r\nb/2\r\n")
    listed = read_text_list(path, "DATASET.TRAIN_SPLIT_FILE", entry="id")
    assert listed.entries == ["a/1", "b/2"] and len(listed) == 2
    assert listed.sha256 == hashlib.sha256(b"a/1\r\nb/2\r\n").hexdigest()  # of the bytes as written
    with pytest.raises(ArtifactError, match=r"DATASET.TRAIN_SPLIT_FILE .*none.txt does not exist \(make it\)"):
        read_text_list(tmp_path / "none.txt", "DATASET.TRAIN_SPLIT_FILE", missing_fix=" (make it)")
