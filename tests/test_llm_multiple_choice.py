"""Stage 1 in multiple-choice mode (LaViD-style questions about a class): the real `openai` client against a
scripted server on 127.0.0.1, malformed replies, LaViD's own question files through the checks, and the written
file read by stage 2 `--level class` on a tiny causal LM."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from llm_server import Reply, ScriptedLLMServer
from mirrors import mirror

from makd.commands.make_questions import main
from makd.formats.class_questions import read_class_questions
from makd.formats.files import read_sidecar
from makd.llm.choice_screening import screen_multiple_choice
from makd.llm.reply_parsing import parse_choice_reply

CLASSES = ["Abyssinian", "Beagle", "Persian", "Pug", "Siamese", "Shiba Inu"]
GOOD = [
    "What is the coat length of the <object>? | Very short | Short | Medium | Long | Very long",
    "What shape are the ears of the <object>? | Pointed and erect | Drooping | Folded | Rounded | Semi-erect",
    "What is the muzzle of the <object> like? | Flat | Short | Medium | Long | Very long",
    "What is the main coat colour of the <object>? | Black | White | Brown | Grey | Cream",
    "How large is the <object> when fully grown? | Toy | Small | Medium | Large | Giant",
    "What pattern does the <object>'s coat show? | Solid | Spotted | Striped | Pointed | Patched",
    "What is the tail of the <object> like? | Curled | Straight | Short | Bushy | Thin",
    "What eye colour is typical of the <object>? | Blue | Green | Amber | Brown | Copper",
]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def classes_file(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return path


def run(server, classes_file: Path, out: Path, *extra: str, n: int = 6, q: int = 4) -> int:
    return main(
        ["--kind", "multiple-choice", "--classes", str(classes_file), "--num-images", "240", "--n", str(n),
         "--q", str(q), "--model", "test-model", "--out", str(out), "--base-url", server.base_url, "--backoff", "0",
         "--retries", "3", "--timeout", "5", *extra]
    )  # fmt: skip


def questions_json(items: list) -> str:
    return json.dumps({"questions": items})


def test_clean_run_writes_a_class_level_file_stage_2_reads(tmp_path, classes_file):
    out = tmp_path / "pets_choice.txt"
    with ScriptedLLMServer([questions_json(GOOD[:6]), questions_json([3, 1, 6, 2])]) as server:
        assert run(server, classes_file, out) == 0
    questions = read_class_questions(out)
    assert [q.line() for q in questions] == [GOOD[2], GOOD[0], GOOD[5], GOOD[1]]
    assert all(len(q.options) == 5 and "<object>" in q.text for q in questions)
    generate = server.requests[0].last_user
    assert "exactly 5 short, mutually exclusive options" in generate and "<object>" in generate
    assert "6 classes and 240 images" in generate and "Generate 6 multiple-choice questions" in generate
    meta = read_sidecar(out)
    assert (meta["kind"], meta["options"], meta["placeholder"]) == ("multiple_choice", 5, "<object>")
    assert meta["candidates"] == GOOD[:6] and meta["num_questions"] == 4


def test_malformed_candidates_are_rejected_with_reasons_then_topped_up(tmp_path, classes_file):
    first = [
        GOOD[0],
        GOOD[1],
        {
            "question": "What is the muzzle of the <object> like?",  # JSON objects with an options list
            "options": ["A. Flat", "B. Short", "C. Medium", "D. Long", "E. Very long"],
        },  # fmt: skip
        "What colour is the <object>? | Black | White | Brown | Grey",  # 4 options
        "What colour is the animal? | Black | White | Brown | Grey | Cream",  # no placeholder
        "Which breed is the <object> closest to? | Beagle | Pug | Persian | Siamese | Mixed",  # names classes
        "Is the <object> furry?",  # a yes/no question
        "What shape are the ears of a <object>? | Pointed and erect | Drooping | Folded | Rounded | Semi-erect",
        "How big is the <object> | Toy | Small | Medium | Large | Giant",  # no "?"
        "What is the coat like? | Short | Short | Long | Curly | Wiry",  # repeated option
    ]
    # the top-up comes as LaViD-style text blocks, "the class" for the object
    blocks = "Here you go:\n\n" + "\n\n".join(
        f"{i}. {line.split(' | ')[0].replace('the <object>', 'the class')}\n"
        + "\n".join(f"    {k}. {o}" for k, o in enumerate(line.split(" | ")[1:], 1))
        for i, line in enumerate(GOOD[3:6], 1)
    )
    out = tmp_path / "pets_choice.txt"
    selection = "1\n" + GOOD[4].split(" | ")[0] + "\n3\n4"  # numbers, and one question copied without its options
    script = [questions_json(first), blocks, selection]
    with ScriptedLLMServer(script, reject_json_mode=True) as server:
        assert run(server, classes_file, out) == 0
    assert "3 of the questions so far are usable" in server.requests[2].last_user
    assert "did not have exactly 5 distinct options" in server.requests[2].last_user
    meta = read_sidecar(out)
    reasons = {r["question"]: r["reason"] for r in meta["rejected"]}
    assert reasons["What colour is the <object>? | Black | White | Brown | Grey"] == "has 4 options, not 5"
    assert reasons["What colour is the animal? | Black | White | Brown | Grey | Cream"].startswith("has no <object>")
    assert reasons["Which breed is the <object> closest to? | Beagle | Pug | Persian | Siamese | Mixed"] == (
        "names the class 'Beagle'"
    )
    assert reasons["Is the <object> furry?"].startswith("has no options")
    assert reasons[GOOD[1].replace("ears of the", "ears of a")] == f"asks the same as {GOOD[1].split(' | ')[0]!r}"
    assert reasons["How big is the <object> | Toy | Small | Medium | Large | Giant"] == (
        "the question does not end with '?'"
    )
    assert "repeated option" in reasons["What is the coat like? | Short | Short | Long | Curly | Wiry"]
    assert meta["candidates"] == GOOD[:6]  # the JSON object and the blocks became lines
    assert [q.line() for q in read_class_questions(out)] == [GOOD[0], GOOD[4], GOOD[2], GOOD[3]]


def test_too_few_usable_questions_writes_nothing(tmp_path, classes_file, capsys):
    out = tmp_path / "pets_choice.txt"
    bad = questions_json(["What colour is the <object>? | Black | White"] * 3)
    with ScriptedLLMServer([bad, bad, bad, Reply(500, "never reached")]) as server:
        assert run(server, classes_file, out) == 2
    assert len(server.requests) == 3 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: generate: the LLM gave 0 usable questions")


def test_options_and_prompts_are_checked_before_any_request(tmp_path, classes_file, capsys):
    with ScriptedLLMServer([]) as server:
        assert run(server, classes_file, tmp_path / "x.txt", "--options", "1") == 2
        assert "--options 1 must be between 2 and 26" in capsys.readouterr().err
        assert run(server, classes_file, tmp_path / "x.txt", "--options", "3", "--dry-run") == 0
        assert "exactly 3 short, mutually exclusive options" in capsys.readouterr().out
    assert server.requests == []


def test_written_file_runs_through_stage_2_class_level(tmp_path, classes_file):
    from makd.commands.stage2 import main as stage2_main
    from makd.demo.tiny_causal_lm import build_tiny_causal_lm

    out = tmp_path / "pets_choice.txt"
    with ScriptedLLMServer([questions_json(GOOD[:6]), questions_json([1, 2, 3, 4])]) as server:
        assert run(server, classes_file, out) == 0
    targets = tmp_path / "class_targets.json"
    assert (
        stage2_main(
            [
                "--level",
                "class",
                "--model",
                str(build_tiny_causal_lm(tmp_path / "lm")),
                "--questions",
                str(out),
                "--classes",
                str(classes_file),
                "--output",
                str(targets),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = json.loads(targets.read_text())  # fmt: skip
    assert list(rows) == CLASSES
    assert all(len(r) == 4 and all(len(d) == 5 and abs(sum(d) - 1) < 1e-6 for d in r) for r in rows.values())


def test_block_replies_with_lettered_options_parse_to_lines():
    reply = (
        "1. What colour is the <object>?\nA. Black\nB) White\n(C) Brown\n\n"
        "2. How big is the class?\n  a. Small\n  b. Big"
    )
    assert parse_choice_reply(reply) == [
        "What colour is the <object>? | Black | White | Brown",
        "How big is the <object>? | Small | Big",
    ]
    assert parse_choice_reply("1. Is it red?\n2. Is it big?") == ["Is it red?", "Is it big?"]  # no options: lines


LAVID_MIRROR = mirror("lliangthomas/lavid")


def _lavid(path: str) -> str:
    return subprocess.run(["git", "-C", str(LAVID_MIRROR), "show", f"HEAD:{path}"], capture_output=True,
                          check=True, text=True).stdout  # fmt: skip


@pytest.mark.skipif(not LAVID_MIRROR.is_dir(), reason="the LaViD mirror is not on this machine")
def test_lavid_pet_questions_pass_the_checks_as_file_and_as_reply(tmp_path):
    text = _lavid("questions/oxfordpets/chat_50-5.txt")
    path = tmp_path / "chat_50-5.txt"
    path.write_text(text, encoding="utf-8")
    lines = [q.line() for q in read_class_questions(path)]
    pets = Path("questions/classes/oxford_pets.txt").read_text(encoding="utf-8").split("\n")
    screening = screen_multiple_choice(lines, 5, [p for p in pets if p.strip()])
    assert len(lines) == 50 and len(screening.kept) + len(screening.rejected) == 50
    # the same text as an LLM reply: the blocks parse to the same lines
    assert [str(i) for i in parse_choice_reply(text)] == lines
    rejected = {line.split(" | ")[0]: reason for line, reason in screening.rejected}
    # every rejection is a question LaViD asked without "the class" (so without <object>) or a repeat
    assert all(r.startswith("has no <object>") or "repeats" in r or "asks the same" in r for r in rejected.values())
    assert len(screening.kept) >= 40


def test_lavid_files_with_unindented_options_are_read(tmp_path):
    # the layout of 8 of LaViD's 32 files (e.g. questions/caltech101/chat_50-5.txt): options not indented
    path = tmp_path / "lavid.txt"
    path.write_text("What kind of surface does the class touch?  \n1. Ground  \n2. Water  \n3. Air  \n\n"
                    "Is the class alive?\n1. Yes\n2. No\n", encoding="utf-8")  # fmt: skip
    assert [q.line() for q in read_class_questions(path)] == [
        "What kind of surface does the <object> touch? | Ground | Water | Air",
        "Is the <object> alive? | Yes | No",
    ]
    plain = tmp_path / "plain.txt"  # a class-level file of one-line questions is not mistaken for blocks
    plain.write_text("What colour is the <object>? | Red | Blue\nHow big is the <object>? | 1. Small | 2. Big\n")
    assert len(read_class_questions(plain)) == 2


@pytest.mark.skipif(not LAVID_MIRROR.is_dir(), reason="the LaViD mirror is not on this machine")
def test_every_lavid_multiple_choice_file_is_read_and_screened(tmp_path):
    listing = subprocess.run(["git", "-C", str(LAVID_MIRROR), "ls-tree", "-r", "HEAD", "--name-only"],
                             capture_output=True, check=True, text=True).stdout.split()  # fmt: skip
    files = [f for f in listing if f.startswith("questions/") and Path(f).name.startswith("chat_") and "-" in f]
    files = [f for f in files if f.endswith(".txt")]
    total = kept = 0
    reasons: Counter = Counter()
    for name in files:
        path = tmp_path / Path(name).name
        path.write_text(_lavid(name), encoding="utf-8")
        questions = read_class_questions(path)
        options = int(Path(name).stem.split("-")[1].split("_")[0])  # chat_50-5 -> 5 options
        assert {len(q.options) for q in questions} == {options}, name
        screening = screen_multiple_choice([q.line() for q in questions], options)
        reasons.update(why.split(" (")[0] for _, why in screening.rejected)
        kept += len(screening.kept)
        total += len(questions)
    # measured at the mirror's HEAD: 32 files, 1,640 questions; without class names to check, 41 are rejected,
    # 39 that end in ":" ("Is the surface texture of the <object> mostly:") and 2 without "the class"
    assert len(files) >= 32 and total >= 1640 and kept == total - sum(reasons.values())
    assert set(reasons) <= {"the question does not end with '?'", "has no <object> placeholder"}
    assert sum(reasons.values()) <= 0.03 * total
