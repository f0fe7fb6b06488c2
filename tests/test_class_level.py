"""Stage 2 at class level: a tiny random Qwen2 causal LM (in process) and a loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mirrors import mirror

from makd.commands.stage2 import main
from makd.demo.tiny_causal_lm import build_tiny_causal_lm
from makd.formats.class_questions import ClassQuestion, parse_class_questions
from makd.formats.errors import ArtifactError
from makd.formats.files import sidecar_path
from makd.formats.questions import questions_sha256
from makd.mllm.class_level import VOLATILE_KEYS, CausalLMScorer, load_causal_lm
from makd.mllm.class_prompts import class_query
from makd.mllm.partial_rows import PartialWriter, partial_path
from tests.llm_server import Reply, ScriptedLLMServer

CLASSES = ["abyssinian", "basset hound", "great_pyrenees"]
YES_NO = ["Is the <object> furry?", "Does it have long ears?", "Is it usually kept indoors?"]
CHOICE = [
    "What is the main colour of the <object>'s coat? | Black | White | Brown | Grey",
    "How large is a <object>? | Small | Medium | Large",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


def _files(tmp_path: Path, questions: list[str]) -> tuple[Path, Path]:
    q, c = tmp_path / "questions.txt", tmp_path / "classes.txt"
    q.write_text("".join(x + "\n" for x in questions), encoding="utf-8")
    c.write_text("".join(x + "\n" for x in CLASSES), encoding="utf-8")
    return q, c


def _reference(model_dir: Path, queries: list[str], words: list[list[str]]) -> list[np.ndarray]:
    """One unbatched forward per prompt, with apply_chat_template(tokenize=True): the independent check."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for query, ws in zip(queries, words):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]  # fmt: skip
        wanted = [tokenizer.convert_tokens_to_ids(w) for w in ws]
        with torch.no_grad():
            logits = model(torch.tensor([list(ids)])).logits[0, -1]
        out.append(torch.softmax(logits[wanted].double(), -1).numpy())
    return out


def test_yes_no_matches_one_forward_per_prompt(tiny_lm, tmp_path):
    q, c = _files(tmp_path, YES_NO)
    out = tmp_path / "class.json"
    argv = ["--level", "class", "--model", str(tiny_lm), "--questions", str(q), "--classes", str(c),
            "--output", str(out), "--batch-size", "4", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    assert list(rows) == CLASSES and all(len(r) == 3 for r in rows.values())
    questions = parse_class_questions(q.read_text())
    # not every question holds <object>, so the default template names the class
    queries = [class_query(x, name, "Consider a photo of a {class}. {question}") for name in CLASSES for x in questions]
    expected = _reference(tiny_lm, queries, [["Yes", "No"]] * len(queries))
    got = np.array([p for name in CLASSES for p in rows[name]])
    assert np.abs(got - np.array([e[0] for e in expected])).max() < 1e-4
    assert got.std() > 0.01  # random model: answers differ, so the comparison bites
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["kind"] == "yes_no" and meta["templates"] == ["Consider a photo of a {class}. {question}"]
    assert set(meta["teacher"]["answer_ids"]) == {"Yes", "No"}
    cost = meta["cost_this_run"]
    assert cost["prompts_scored"] == 9 and cost["tokens_processed"] >= cost["prompt_tokens"] > 9 * 10
    assert meta["example_prompts"]["prompts"][0].endswith("Is the abyssinian furry?<|im_end|>\n<|im_start|>assistant\n")
    assert not partial_path(out).exists()


def test_multiple_choice_distributions_and_paraphrase_average(tiny_lm, tmp_path):
    q, c = _files(tmp_path, CHOICE)
    out = tmp_path / "mcq.json"
    t1, t2 = "{question}", "About {class}: {question}"
    argv = ["--level", "class", "--model", str(tiny_lm), "--questions", str(q), "--classes", str(c),
            "--output", str(out), "--class-template", t1, "--class-template", t2, "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    assert [len(d) for d in rows["abyssinian"]] == [4, 3]
    for row in rows.values():
        for dist in row:
            assert abs(sum(dist) - 1) < 1e-9
    questions = parse_class_questions(q.read_text())
    name = "basset hound"
    queries = [class_query(x, name, t) for x in questions for t in (t1, t2)]
    words = [list("ABCD"), list("ABCD"), list("ABC"), list("ABC")]
    ref = _reference(tiny_lm, queries, words)
    assert np.abs(np.array(rows[name][0]) - (ref[0] + ref[1]) / 2).max() < 1e-4
    assert np.abs(np.array(rows[name][1]) - (ref[2] + ref[3]) / 2).max() < 1e-4
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["options_per_question"] == [4, 3] and meta["cost_this_run"]["prompts_scored"] == 3 * 2 * 2


def test_resume_continues_to_the_same_bytes(tiny_lm, tmp_path):
    q, c = _files(tmp_path, YES_NO)
    full, part = tmp_path / "full.json", tmp_path / "part.json"
    base = ["--level", "class", "--model", str(tiny_lm), "--questions", str(q), "--classes", str(c), "--device", "cpu"]
    assert main([*base, "--output", str(full)]) == 0
    # a run killed after its first class: the partial file holds the header and one row
    done = json.loads(full.read_text())
    model, tokenizer, info = load_causal_lm(str(tiny_lm), "hf", "cpu", "auto", None)
    scorer = CausalLMScorer(model, tokenizer, 16, None, info)
    lines = [x.line() for x in parse_class_questions(q.read_text())]
    settings = {
        "level": "class", "questions_sha256": questions_sha256(lines), "classes": CLASSES,
        "templates": ["Consider a photo of a {class}. {question}"], "answer_suffix": "", "answer_words": ["Yes", "No"],
        "teacher": {k: v for k, v in scorer.describe().items() if k not in VOLATILE_KEYS},
    }  # fmt: skip
    writer = PartialWriter(partial_path(part), settings)
    writer.add_row(CLASSES[0], [0.5, 0.5, 0.5])  # a marker value: resume must keep it, not recompute it
    writer.close()
    assert main([*base, "--output", str(part)]) == 2  # refuses to start over without --resume
    assert main([*base, "--output", str(part), "--resume"]) == 0
    resumed = json.loads(part.read_text())
    assert resumed[CLASSES[0]] == [0.5, 0.5, 0.5]
    assert resumed[CLASSES[1]] == done[CLASSES[1]] and resumed[CLASSES[2]] == done[CLASSES[2]]
    assert json.loads(sidecar_path(part).read_text())["cost_this_run"]["prompts_scored"] == 6


def test_changed_settings_refuse_resume(tiny_lm, tmp_path, capsys):
    q, c = _files(tmp_path, YES_NO)
    out = tmp_path / "x.json"
    partial_path(out).write_text('{"format": "makd-partial-rows-1", "settings": {"level": "class"}}\n')
    argv = ["--level", "class", "--model", str(tiny_lm), "--questions", str(q), "--classes", str(c),
            "--output", str(out), "--resume", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "other settings" in capsys.readouterr().err


def _logprob_reply(p_yes: float, letters: dict[str, float] | None = None):
    def reply(body: dict) -> Reply:
        top = letters or {"Yes": math.log(p_yes), "No": math.log(1 - p_yes - 0.05), "Maybe": math.log(0.05)}
        first = max(top, key=top.get)
        entry = {
            "token": first,
            "logprob": top[first],
            "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()],
        }
        choice = {"index": 0, "message": {"role": "assistant", "content": first}, "finish_reason": "length",
                  "logprobs": {"content": [entry]}}  # fmt: skip
        return Reply(payload={"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                              "choices": [choice], "usage": {"prompt_tokens": 11, "completion_tokens": 1}})  # fmt: skip

    return reply


def test_openai_server_backend(tmp_path):
    q, c = _files(tmp_path, YES_NO[:2])
    out = tmp_path / "served.json"

    def by_question(body: dict) -> Reply:
        text = body["messages"][-1]["content"]
        p = 0.2 if "furry" in text else 0.7
        return _logprob_reply(p)(body)

    with ScriptedLLMServer([by_question] * 6) as server:
        argv = ["--level", "class", "--backend", "openai", "--base-url", server.base_url, "--model", "text-llm",
                "--questions", str(q), "--classes", str(c), "--output", str(out), "--concurrency", "2"]  # fmt: skip
        assert main(argv) == 0
        sent = [r.body for r in server.requests]
    assert len(sent) == 6 and all(b["max_tokens"] == 1 and b["logprobs"] for b in sent)
    assert any("great_pyrenees" in b["messages"][-1]["content"] for b in sent)
    rows = json.loads(out.read_text())
    assert rows["abyssinian"] == pytest.approx([0.2 / 0.95, 0.7 / 0.95])
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["cost_this_run"]["prompt_tokens"] == 66 and meta["teacher"]["backend"] == "openai"


def test_openai_multiple_choice_letters(tmp_path):
    q, c = _files(tmp_path, CHOICE[1:])
    out = tmp_path / "served_mcq.json"
    letters = {"A": math.log(0.5), "B": math.log(0.3), "Z": math.log(0.1)}  # C unlisted: bounded by the floor
    with ScriptedLLMServer([_logprob_reply(0, letters)] * 3) as server:
        argv = ["--level", "class", "--backend", "openai", "--base-url", server.base_url, "--model", "m",
                "--questions", str(q), "--classes", str(c), "--output", str(out)]  # fmt: skip
        assert main(argv) == 0
    row = json.loads(out.read_text())["abyssinian"][0]
    assert row == pytest.approx([0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9])


def test_question_file_errors():
    with pytest.raises(ArtifactError, match="one kind per file"):
        parse_class_questions("Is it <object>? | A | B\nIs it red?\n")
    with pytest.raises(ArtifactError, match="one option only"):
        parse_class_questions("Is it <object>? | A\n")
    assert [q.text for q in parse_class_questions("Is it?\n\nIs it red?\n")] == ["Is it?", "Is it red?"]  # blank
    with pytest.raises(ArtifactError, match=r":3: question 'is it RED\?' repeats line 1"):
        parse_class_questions("Is it red?\n\nis it RED?\n")
    q = ClassQuestion("Size of the <object>?", ("Small", "Large"))
    assert class_query(q, "pug", "{question}") == "Size of the pug?\nA. Small\nB. Large\n" + (
        "Answer with the letter of the correct option only."
    )


def test_template_without_class_is_refused(tiny_lm, tmp_path, capsys):
    q, c = _files(tmp_path, ["Is it furry?"])
    argv = ["--level", "class", "--model", str(tiny_lm), "--questions", str(q), "--classes", str(c),
            "--output", str(tmp_path / "o.json"), "--class-template", "Tell me: {question}"]  # fmt: skip
    assert main(argv) == 2
    assert "the class would never be named" in capsys.readouterr().err


def test_stage1_multiple_choice_prompts_and_screening():
    from makd.llm.choice_screening import screen_multiple_choice
    from makd.llm.prompts import fill, load_prompts

    prompts = load_prompts(Path(__file__).resolve().parents[1] / "makd/llm/prompt_files/lavid_multiple_choice.yaml")
    text = fill(prompts.generate, {"C": 2, "M": 10, "N": 8, "OPTIONS": 5, "CLASS_LIST": "pug, beagle"})
    assert "<object>" in text and "exactly 5" in text and "pug, beagle" in text
    five = " | Black | White | Brown | Grey | Mixed"
    candidates = [
        "What is the main colour of the <object>'s coat?" + five,
        "What  is the main colour of the <object>'s coat?" + five,  # a repeat once whitespace is normalised
        "What is the main colour of its coat?" + five,  # no placeholder
        "How long are the <object>'s ears? | Short | Long",  # 2 options, not 5
        "Is the <object> a pug?" + five,  # names a class
        "What shape is the <object>'s tail? | Curled | Straight | Docked | Bushy | Thin",
        "What shape is the <object>'s tail" + five,  # no question mark
    ]
    result = screen_multiple_choice(candidates, 5, ["pug", "beagle"])
    assert result.kept == [candidates[0], candidates[5]]
    reasons = [why for _, why in result.rejected]
    assert "repeats" in reasons[0] and "<object>" in reasons[1] and "2 options, not 5" in reasons[2]
    assert "names the class 'pug'" in reasons[3] and "'?'" in reasons[4]
    # the kept lines are a class-level questions file as they stand
    assert len(parse_class_questions("\n".join(result.kept))) == 2


def test_server_without_the_answer_words_keeps_finished_classes_for_resume(tmp_path, capsys):
    q, c = _files(tmp_path, YES_NO[:1])
    out = tmp_path / "served.json"

    def unless_pug(body: dict) -> Reply:
        text = body["messages"][-1]["content"]
        if "basset hound" in text:  # neither Yes nor No among the top log-probabilities
            return _logprob_reply(0, {"Maybe": math.log(0.6), "yes": math.log(0.3)})(body)
        return _logprob_reply(0.4)(body)

    argv = ["--level", "class", "--backend", "openai", "--model", "m", "--questions", str(q), "--classes", str(c),
            "--output", str(out), "--concurrency", "1"]  # fmt: skip
    with ScriptedLLMServer([unless_pug] * 3) as server:
        assert main([*argv, "--base-url", server.base_url]) == 2
    err = capsys.readouterr().err
    assert "'basset hound'" in err and "--resume" in err and not out.exists()
    with ScriptedLLMServer([_logprob_reply(0.4)]) as server:  # only the failed class is asked again
        assert main([*argv, "--base-url", server.base_url, "--resume"]) == 0
        assert len(server.requests) == 1
    assert json.loads(out.read_text())["basset hound"] == pytest.approx([0.4 / 0.95])


def test_server_failure_is_one_line_and_keeps_nothing_half_written(tmp_path, capsys):
    q, c = _files(tmp_path, YES_NO[:2])
    out = tmp_path / "served.json"
    with ScriptedLLMServer([Reply(400, "model not found")] * 8) as server:
        argv = ["--level", "class", "--backend", "openai", "--base-url", server.base_url, "--model", "m",
                "--questions", str(q), "--classes", str(c), "--output", str(out), "--max-retries", "0"]  # fmt: skip
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "model 'm'" in err[0]
    assert not out.exists() and not sidecar_path(out).exists()


def test_lavid_block_question_files_are_read():
    from makd.formats.class_questions import is_lavid_block_text, parse_lavid_questions

    text = (
        "What kind of coat texture best represents the class?  \n    1. Silky  \n    2. Short  \n    3. Curly  \n\n"
        "Which body size fits?\n    1. Small\n    2. Large\n"
    )
    assert is_lavid_block_text(text) and not is_lavid_block_text("Is it red? | Yes | No\n")
    first, second = parse_lavid_questions(text)
    assert first == ClassQuestion(
        "What kind of coat texture best represents the <object>?", ("Silky", "Short", "Curly")
    )
    assert second.options == ("Small", "Large") and "<object>" not in second.text
    with pytest.raises(ArtifactError, match="an option before any question"):
        parse_lavid_questions("    1. Small\n")


LAVID_MIRROR = mirror("lliangthomas/lavid")


@pytest.mark.skipif(not LAVID_MIRROR.is_dir(), reason="the LaViD mirror is not on this machine")
def test_lavid_published_pet_questions_read_as_50_by_5(tmp_path):
    import subprocess

    from makd.formats.class_questions import read_class_questions

    data = subprocess.run(["git", "-C", str(LAVID_MIRROR), "show", "HEAD:questions/oxfordpets/chat_50-5.txt"],
                          capture_output=True, check=True).stdout  # fmt: skip
    path = tmp_path / "chat_50-5.txt"
    path.write_bytes(data)
    questions = read_class_questions(path)
    assert len(questions) == 50 and all(len(q.options) == 5 for q in questions)
    assert all("<object>" in q.text for q in questions)  # its "the class" became "the <object>"


def test_digit_option_labels_read_digit_tokens(tiny_lm, tmp_path):
    q, c = _files(tmp_path, CHOICE[1:])
    out = tmp_path / "digits.json"
    argv = ["--level", "class", "--model", str(tiny_lm), "--questions", str(q), "--classes", str(c),
            "--output", str(out), "--option-labels", "digits", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    question = parse_class_questions(q.read_text())[0]
    query = class_query(question, "pug", "{question}", labels="digits")
    assert query.endswith("1. Small\n2. Medium\n3. Large\nAnswer with the number of the correct option only.")
    ref = _reference(tiny_lm, [class_query(question, "abyssinian", "{question}", labels="digits")], [list("123")])
    assert np.abs(np.array(json.loads(out.read_text())["abyssinian"][0]) - ref[0]).max() < 1e-4
    assert set(json.loads(sidecar_path(out).read_text())["teacher"]["answer_ids"]) == {"1", "2", "3"}
    ten = tmp_path / "ten.txt"
    ten.write_text("Which of ten for the <object>? | " + " | ".join(f"o{i}" for i in range(10)) + "\n")
    assert main([*argv[:5], str(ten), *argv[6:]]) == 2  # 10 options cannot be labelled by one digit
