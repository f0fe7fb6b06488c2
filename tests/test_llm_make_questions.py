"""tools/make_questions.py end to end: the real `openai` client against a scripted server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from llm_server import Reply, ScriptedLLMServer

from makd.commands.make_questions import main
from makd.formats.files import read_sidecar, sha256_text
from makd.formats.questions import read_questions
from makd.llm.prompts import PAPER_GENERATE, PAPER_SELECT

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-SENTINEL-7d1e5c-never-leak-0042"
CLASSES = ["Abyssinian", "Beagle", "Persian", "Pug", "Siamese", "Shiba Inu"]
GOOD = [
    "Is the animal's coat long?",
    "Are the ears pointed and upright?",
    "Is the muzzle short and flat?",
    "Does the coat show stripes or spots?",
    "Is the photo taken indoors?",
    "Is the tail curled over the back?",
    "Are the eyes blue?",
    "Is there grass in the background?",
    "Is the animal wearing a collar?",
    "Does the face have a darker mask?",
    "Are the legs short relative to the body?",
    "Is a person holding the animal?",
    "Do the ears hang down beside the head?",
    "Is the coat a single solid colour?",
    "Does the skin on the face form deep wrinkles?",
    "Is the animal lying on a sofa or bed?",
]


def questions_json(questions: list) -> str:
    return json.dumps({"questions": questions})


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def classes_file(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return path


def run(server: ScriptedLLMServer, classes_file: Path, out: Path, *extra: str, n: int = 12, q: int = 6) -> int:
    return main(
        ["--classes", str(classes_file), "--num-images", "240", "--n", str(n), "--q", str(q), "--model", "test-model",
         "--out", str(out), "--base-url", server.base_url, "--backoff", "0", "--retries", "3", "--timeout", "5",
         *extra]
    )  # fmt: skip


def test_clean_two_step_run_writes_a_file_stage_2_reads(tmp_path, classes_file):
    out = tmp_path / "questions" / "pets.txt"
    selection = [GOOD[4], GOOD[0], GOOD[2], GOOD[9], GOOD[1], GOOD[7]]
    script = [questions_json(GOOD[:12]), questions_json(selection)]
    with ScriptedLLMServer(list(script)) as server:
        assert run(server, classes_file, out) == 0
    assert read_questions(out, expected_count=6) == selection  # the stage-2 reader takes it as is

    generate, select = server.requests
    assert generate.path == "/v1/chat/completions"
    assert generate.headers["authorization"] == f"Bearer {KEY}"
    assert generate.body["model"] == "test-model"
    assert generate.body["temperature"] == 0.7 and generate.body["seed"] == 0
    assert generate.body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in generate.messages] == ["user"]
    assert generate.last_user.startswith(
        "The dataset consists of 6 classes and 240 images. The class list is as follows: "
        "Abyssinian, Beagle, Persian, Pug, Siamese, Shiba Inu, Generate 12 feature-specific yes or no questions"
    )
    # Step 2 continues the chat: the screened candidates are the assistant's numbered list.
    assert [m["role"] for m in select.messages] == ["user", "assistant", "user"]
    assert select.messages[0]["content"] == generate.last_user
    assert select.messages[1]["content"] == "\n".join(f"{i}. {q}" for i, q in enumerate(GOOD[:12], 1))
    assert select.last_user.startswith(PAPER_SELECT.replace("{Q}", "6"))

    meta = read_sidecar(out)
    assert meta["sha256"] == sha256_text(out.read_text(encoding="utf-8"))
    assert (meta["model"], meta["N"], meta["Q"], meta["temperature"], meta["seed"]) == ("test-model", 12, 6, 0.7, 0)
    assert meta["server_host"] == server.base_url.split("//")[1].split("/")[0]
    assert meta["classes"] == CLASSES and meta["num_images"] == 240
    assert [e["reply"] for e in meta["exchanges"]] == script  # the raw replies
    assert [e["step"] for e in meta["exchanges"]] == ["generate", "select"]
    assert meta["candidates"] == GOOD[:12] and meta["rejected"] == []
    assert meta["prompts"]["generate"].startswith(PAPER_GENERATE)
    assert meta["json_mode"] == {"requested": "auto", "used": True}
    assert meta["requests_sent"] == 2 and meta["cache_hits"] == 0 and meta["date"]


def test_numbered_list_replies_from_a_server_without_json_mode(tmp_path, classes_file):
    generated = "Sure! Here are 12 questions:\n\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(GOOD[:12], 1))
    selected = "Selected questions:\n" + "\n".join(f"- **{q}**" for q in GOOD[6:12])
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([generated, selected], reject_json_mode=True) as server:
        assert run(server, classes_file, out) == 0
    assert read_questions(out) == GOOD[6:12]
    # One 400 for response_format, then plain requests; the client remembers and does not ask again.
    assert ["response_format" in r.body for r in server.requests] == [True, False, False]
    meta = read_sidecar(out)
    assert meta["json_mode"] == {"requested": "auto", "used": False}
    assert meta["rejected"] == [{"question": "Sure! Here are 12 questions:", "reason": "does not end with '?'"}]


def test_duplicates_non_questions_and_class_names_are_dropped_then_topped_up(tmp_path, classes_file):
    first = GOOD[:8] + [
        "Is the coat of the animal long?",  # same content words as GOOD[0]
        "Is the animal’s coat long?",  # typographic apostrophe: the same normalised text as GOOD[0]
        "Is the animal's caot long?",  # a typo: 90% alike
        "Is this a Beagle?",
        "Describe the colour of the fur.",
        "Is the fur long? Is it soft?",
        GOOD[2],
    ]
    out = tmp_path / "pets.txt"
    script = [questions_json(first), questions_json(GOOD[8:12]), questions_json(GOOD[:6])]
    with ScriptedLLMServer(script) as server:
        assert run(server, classes_file, out) == 0
    assert len(server.requests) == 3
    topup = server.requests[1]
    assert [m["role"] for m in topup.messages] == ["user", "assistant", "user"]
    assert topup.messages[1]["content"] == script[0]  # the first reply stays in the chat
    assert "8 of the questions so far are usable" in topup.last_user
    assert "Generate 4 more feature-specific yes or no questions" in topup.last_user
    meta = read_sidecar(out)
    assert meta["candidates"] == GOOD[:12]
    reasons = {r["question"]: r["reason"] for r in meta["rejected"]}
    assert reasons["Is the coat of the animal long?"] == f"asks the same as {GOOD[0]!r}"
    assert reasons["Is the animal’s coat long?"] == f"repeats {GOOD[0]!r}"
    assert reasons["Is the animal's caot long?"] == f"nearly repeats {GOOD[0]!r}"
    assert reasons["Is this a Beagle?"] == "names the class 'Beagle'"
    assert reasons["Describe the colour of the fur."] == "does not end with '?'"
    assert reasons["Is the fur long? Is it soft?"] == "holds more than one question mark"
    assert reasons[GOOD[2]] == f"repeats {GOOD[2]!r}"
    assert read_questions(out) == GOOD[:6]


def test_selection_with_too_few_and_invented_questions_is_topped_up(tmp_path, classes_file):
    invented = ["Is the animal a rare breed?", "Does the animal look friendly?"]
    first = questions_json([GOOD[3], GOOD[5], "7", GOOD[10]] + invented)  # "7" is candidate number 7
    second = questions_json([GOOD[5], GOOD[0], GOOD[11]])  # one repeat, then the two missing
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([questions_json(GOOD[:12]), first, second]) as server:
        assert run(server, classes_file, out) == 0
    follow_up = server.requests[2]
    assert "Your selection has 4 of the 6 questions needed." in follow_up.last_user
    assert "These 2 are not in the list and were ignored: 'Is the animal a rare breed?'" in follow_up.last_user
    assert "Select 2 more questions from the list" in follow_up.last_user
    assert read_questions(out) == [GOOD[3], GOOD[5], GOOD[6], GOOD[10], GOOD[0], GOOD[11]]


def test_selection_with_too_many_is_asked_again_for_exactly_q(tmp_path, classes_file):
    out = tmp_path / "pets.txt"
    script = [questions_json(GOOD[:12]), questions_json(GOOD[:9]), questions_json(GOOD[3:9])]
    with ScriptedLLMServer(script) as server:
        assert run(server, classes_file, out) == 0
    assert "has 9 questions but exactly 6 are needed" in server.requests[2].last_user
    assert "Select exactly 6 questions from the list" in server.requests[2].last_user
    assert read_questions(out) == GOOD[3:9]


def test_selection_that_keeps_inventing_fails_and_writes_nothing(tmp_path, classes_file, capsys):
    out = tmp_path / "pets.txt"
    made_up = questions_json(["Is the animal happy?", GOOD[1]])
    with ScriptedLLMServer([questions_json(GOOD[:12]), made_up, made_up]) as server:
        assert run(server, classes_file, out, "--max-rounds", "2") == 2
    assert len(server.requests) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "select: after 2 replies the LLM chose 1 questions from the 12 candidates but --q 6 are needed" in err
    assert "'Is the animal happy?'" in err
    assert not out.exists() and not Path(str(out) + ".meta.json").exists()


def test_too_few_usable_candidates_is_a_clear_error(tmp_path, classes_file, capsys):
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([questions_json(GOOD[:3] + ["Is it a Pug?"])] * 2) as server:
        assert run(server, classes_file, out, "--max-rounds", "2") == 2
    err = capsys.readouterr().err
    assert "generate: the LLM gave 3 usable questions in 2 replies but --q 6 are needed" in err
    assert "names the class 'Pug'" in err
    assert not out.exists()


def test_429_then_success(tmp_path, classes_file, caplog):
    out = tmp_path / "pets.txt"
    script = [Reply(429, "rate limited", {"retry-after": "0"}), questions_json(GOOD[:12]), questions_json(GOOD[:6])]
    with ScriptedLLMServer(script) as server:
        assert run(server, classes_file, out) == 0
    assert len(server.requests) == 3
    assert server.requests[0].body == server.requests[1].body  # the same request, sent again
    assert "HTTP 429; try 2 of 3" in caplog.text
    assert read_questions(out) == GOOD[:6]


def test_timeout_is_retried(tmp_path, classes_file):
    out = tmp_path / "pets.txt"
    script = [Reply(200, questions_json(GOOD[:12]), delay=1.0), questions_json(GOOD[:12]), questions_json(GOOD[:6])]
    with ScriptedLLMServer(script) as server:
        assert run(server, classes_file, out, "--timeout", "0.3") == 0
    assert len(server.requests) == 3
    assert read_questions(out) == GOOD[:6]


def test_persistent_500_fails_clearly_and_writes_nothing(tmp_path, classes_file, capsys):
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([Reply(500, "upstream exploded")] * 3) as server:
        assert run(server, classes_file, out) == 2
    assert len(server.requests) == 3  # --retries 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "generate round 1:" in err and "failed on all 3 tries (last: HTTP 500" in err
    assert "upstream exploded" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == [classes_file]


def test_cache_makes_a_repeated_run_send_no_request(tmp_path, classes_file):
    out, cache = tmp_path / "pets.txt", tmp_path / "cache"
    with ScriptedLLMServer([questions_json(GOOD[:12]), questions_json(GOOD[6:12])]) as server:
        assert run(server, classes_file, out, "--cache", str(cache)) == 0
    first_text = out.read_text(encoding="utf-8")
    assert len(list(cache.glob("*.json"))) == 2
    with ScriptedLLMServer([], port=server.port) as again:  # the same URL, so the same request hashes
        assert run(again, classes_file, out, "--cache", str(cache), "--overwrite") == 0
    assert len(again.requests) == 0  # measured: a repeated run makes zero requests
    assert out.read_text(encoding="utf-8") == first_text
    meta = read_sidecar(out)
    assert (meta["requests_sent"], meta["cache_hits"]) == (0, 2)
    assert all(e["cached"] for e in meta["exchanges"])


def test_cache_resumes_after_a_crash_in_step_2(tmp_path, classes_file):
    out, cache = tmp_path / "pets.txt", tmp_path / "cache"
    with ScriptedLLMServer([questions_json(GOOD[:12])] + [Reply(503, "down")] * 3) as server:
        assert run(server, classes_file, out, "--cache", str(cache)) == 2
    assert not out.exists()
    with ScriptedLLMServer([questions_json(GOOD[:6])], port=server.port) as again:
        assert run(again, classes_file, out, "--cache", str(cache)) == 0
    assert [r.last_user[:6] for r in again.requests] == ["Select"]  # step 1 was not paid twice
    assert read_questions(out) == GOOD[:6]


def test_the_key_never_reaches_files_logs_or_errors(tmp_path, classes_file, capsys, caplog):
    out, cache = tmp_path / "pets.txt", tmp_path / "cache"
    with ScriptedLLMServer([questions_json(GOOD[:12]), questions_json(GOOD[:6])]) as server:
        assert run(server, classes_file, out, "--cache", str(cache)) == 0
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was used ...
    # ... and a server that echoes it back in an error does not get it printed.
    with ScriptedLLMServer([Reply(401, f"Incorrect API key provided: {KEY}")]) as echo:
        assert run(echo, classes_file, tmp_path / "other.txt") == 2
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "check OPENAI_API_KEY" in captured.err and "***" in captured.err
    written = [p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 4  # questions, sidecar, two cache entries
    for text in [*written, captured.out, captured.err, caplog.text]:
        assert KEY not in text


def test_missing_key_is_an_error_for_openai_and_optional_for_local_servers(tmp_path, classes_file, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    out = tmp_path / "pets.txt"
    argv = ["--classes", str(classes_file), "--num-images", "240", "--n", "12", "--q", "6", "--model", "gpt-4o",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    assert "OPENAI_API_KEY is not set but api.openai.com needs a key" in capsys.readouterr().err
    with ScriptedLLMServer([questions_json(GOOD[:12]), questions_json(GOOD[:6])]) as server:
        assert run(server, classes_file, out) == 0
    assert server.requests[0].headers["authorization"] == "Bearer EMPTY"


def test_dry_run_prints_the_exact_prompts_and_sends_nothing(tmp_path, classes_file, capsys):
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([]) as server:
        assert run(server, classes_file, out, "--dry-run") == 0
    assert server.requests == [] and not out.exists()
    printed = capsys.readouterr().out
    expected = PAPER_GENERATE.format(C=6, M=240, CLASS_LIST=", ".join(CLASSES), N=12)
    assert expected in printed
    assert PAPER_SELECT.replace("{Q}", "6") in printed


def test_the_command_script_runs(tmp_path, classes_file):
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_questions.py"), "--classes", str(classes_file), "--num-images",
         "10", "--n", "20", "--q", "5", "--dry-run"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "The dataset consists of 6 classes and 10 images." in done.stdout


def test_custom_prompts_file_is_sent(tmp_path, classes_file):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(
        'generate: "List {N} yes/no questions about photos of: {CLASS_LIST}. Answer in JSON."\n'
        'select: "Keep the {Q} best ones, as JSON."\n'
        'system: "You write visual questions."\n',
        encoding="utf-8",
    )
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([questions_json(GOOD[:12]), questions_json(GOOD[:6])]) as server:
        argv = ["--classes", str(classes_file), "--n", "12", "--q", "6", "--model", "m", "--out", str(out),
                "--base-url", server.base_url, "--prompts", str(prompts)]  # fmt: skip
        assert main(argv) == 0  # no {M} in these prompts, so no --num-images needed
    first = server.requests[0].messages
    assert first[0] == {"role": "system", "content": "You write visual questions."}
    assert first[1]["content"] == f"List 12 yes/no questions about photos of: {', '.join(CLASSES)}. Answer in JSON."
    assert server.requests[1].last_user == "Keep the 6 best ones, as JSON."


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--q", "13"], "--q 13 must be between 1 and --n 12"),
        (["--out-exists"], "already exists; pass --overwrite to replace it"),
        (["--no-num-images"], "pass --num-images M"),
        (["--prompts-bad"], "uses unknown placeholder {CLASSES}"),
    ],
)
def test_bad_input_fails_before_any_request(tmp_path, classes_file, capsys, extra, message):
    out = tmp_path / "pets.txt"
    argv = ["--classes", str(classes_file), "--num-images", "240", "--n", "12", "--q", "6", "--model", "m",
            "--out", str(out)]  # fmt: skip
    if extra == ["--out-exists"]:
        out.write_text("keep me\n", encoding="utf-8")
    elif extra == ["--no-num-images"]:
        argv = argv[:2] + argv[4:]
    elif extra == ["--prompts-bad"]:
        bad = tmp_path / "prompts.yaml"
        bad.write_text('generate: "Questions about {CLASSES}?"\n', encoding="utf-8")
        argv += ["--prompts", str(bad)]
    else:
        argv += extra
    with ScriptedLLMServer([]) as server:
        assert main([*argv, "--base-url", server.base_url]) == 2
    assert server.requests == []
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    if extra == ["--out-exists"]:
        assert out.read_text(encoding="utf-8") == "keep me\n"  # nothing already written is lost


def test_base_url_is_stored_without_credentials_or_query():
    from makd.llm.openai_client import sanitized_base_url, server_host

    url = "https://user:secret@llm.example.org:8443/v1/?api-key=abc#x"
    assert sanitized_base_url(url) == "https://llm.example.org:8443/v1"
    assert server_host(url) == "llm.example.org:8443"


@pytest.mark.parametrize("case", ["out_parent_is_a_file", "sidecar_is_a_folder", "cache_is_a_file",
                                  "cache_parent_is_a_file"])  # fmt: skip
def test_unwritable_outputs_fail_before_any_paid_request(tmp_path, classes_file, capsys, case):
    out, extra = tmp_path / "pets.txt", []
    if case == "out_parent_is_a_file":
        (tmp_path / "questions").write_text("a file, not a folder\n")
        out = tmp_path / "questions" / "pets.txt"
    elif case == "sidecar_is_a_folder":
        (tmp_path / "pets.txt.meta.json").mkdir()
    elif case == "cache_is_a_file":
        (tmp_path / "cache").write_text("x")
        extra = ["--cache", str(tmp_path / "cache")]
    else:
        (tmp_path / "cache").write_text("x")
        extra = ["--cache", str(tmp_path / "cache" / "llm")]
    with ScriptedLLMServer([questions_json(GOOD[:12]), questions_json(GOOD[:6])]) as server:
        assert run(server, classes_file, out, *extra) == 2
    assert server.requests == []  # nothing was paid for
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and ("cannot be written" in err or "is a" in err)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, raw=b"<html>502 Bad Gateway</html>"), "sent a reply that is not JSON"),
        (Reply(200, payload={"object": "chat.completion", "model": "m"}), "holds no choices"),
    ],
)
def test_a_broken_reply_is_one_line_not_a_traceback(tmp_path, classes_file, capsys, reply, message):
    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([reply]) as server:
        assert run(server, classes_file, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "generate round 1" in err
    assert not out.exists()


def test_reply_content_as_a_list_of_text_parts_is_joined(tmp_path, classes_file):
    def parts(questions: list) -> Reply:
        text = questions_json(questions)
        payload = {"object": "chat.completion", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": [{"type": "text", "text": text[:10]},
                                                                {"type": "text", "text": text[10:]}]}}]}  # fmt: skip
        return Reply(payload=payload)

    out = tmp_path / "pets.txt"
    with ScriptedLLMServer([parts(GOOD[:12]), parts(GOOD[:6])]) as server:
        assert run(server, classes_file, out) == 0
    assert read_questions(out) == GOOD[:6]


def test_ctrl_c_says_how_to_resume_and_the_cache_keeps_paid_replies(tmp_path, classes_file, capsys):
    import os
    import signal
    import threading
    import time

    out, cache = tmp_path / "pets.txt", tmp_path / "cache"
    # The first reply is paid and cached; the second is slow, and Ctrl-C (a real SIGINT) arrives while waiting.
    script = [questions_json(GOOD[:12]), Reply(200, questions_json(GOOD[:6]), delay=3.0)]
    with ScriptedLLMServer(script) as server:

        def press_ctrl_c() -> None:
            while len(server.requests) < 2:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        try:
            code = run(server, classes_file, out, "--cache", str(cache))
        finally:
            presser.join()
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("interrupted; ") and f"--cache {cache}" in err and "same --cache" in err
    assert not out.exists() and len(list(cache.glob("*.json"))) == 1
    with ScriptedLLMServer([questions_json(GOOD[:6])], port=server.port) as again:
        assert run(again, classes_file, out, "--cache", str(cache)) == 0
    assert len(again.requests) == 1  # only the interrupted request is sent again


def test_stage_1_files_get_the_users_umask(tmp_path, classes_file):
    import os

    out, cache = tmp_path / "pets.txt", tmp_path / "cache"
    old = os.umask(0o027)
    try:
        with ScriptedLLMServer([questions_json(GOOD[:12]), questions_json(GOOD[:6])]) as server:
            assert run(server, classes_file, out, "--cache", str(cache)) == 0
    finally:
        os.umask(old)
    written = [out, Path(str(out) + ".meta.json"), *cache.glob("*.json")]
    assert len(written) == 4 and all(p.stat().st_mode & 0o777 == 0o640 for p in written)


def test_the_command_runs_this_checkout_from_anywhere(tmp_path, classes_file):
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a bare checkout: nothing on the path
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_questions.py"), "--classes", str(classes_file), "--num-images",
         "10", "--n", "20", "--q", "5", "--dry-run"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "The dataset consists of 6 classes and 10 images." in done.stdout
