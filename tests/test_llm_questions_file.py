"""Reading a questions file (makd.formats.questions.read_questions): the byte-order mark some editors add is removed
with a warning, so it never becomes part of the first question (and of the MLLM prompt)."""

from __future__ import annotations

import pytest

from makd.formats.errors import ArtifactError
from makd.formats.files import sha256_file
from makd.formats.questions import questions_sha256, read_questions

QUESTIONS = ["Is the object red?", "Does it have wings?"]


def test_a_leading_byte_order_mark_is_removed_with_a_warning(tmp_path, caplog):
    clean = tmp_path / "clean.txt"
    clean.write_text("".join(q + "\n" for q in QUESTIONS), encoding="utf-8")
    marked = tmp_path / "marked.txt"
    marked.write_text("\ufeff" + "".join(q + "\r\n" for q in QUESTIONS), encoding="utf-8")  # Notepad: BOM + CRLF
    assert read_questions(clean) == QUESTIONS and caplog.text == ""
    assert read_questions(marked) == QUESTIONS
    assert "marked.txt: removed the UTF-8 byte-order mark" in caplog.text
    # The sha256 of the normalised text is that of the clean file, whatever the editor added.
    assert questions_sha256(read_questions(marked)) == sha256_file(clean)
    assert sha256_file(marked) != sha256_file(clean)


def test_a_byte_order_mark_inside_the_text_is_an_error(tmp_path):
    joined = tmp_path / "joined.txt"  # two files concatenated: the second one's BOM lands on line 2
    joined.write_text(QUESTIONS[0] + "\n\ufeff" + QUESTIONS[1] + "\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"joined.txt:2: holds a byte-order mark"):
        read_questions(joined)
