"""OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that answers with log-probabilities.

Image i is a solid colour with red = 10 * i; the server decodes the PNG it receives, reads the colour back
and answers P(Yes) = 0.05 + 0.1 * i + 0.2 * q (question q), so every expected number is known here.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from mllm_fixtures import screened
from PIL import Image

from makd.commands.stage2 import PAPER_ANSWER_SUFFIX, main
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar
from makd.mllm.openai_scorer import RateLimiter, host_free
from makd.mllm.partial_rows import partial_path

QUESTIONS = ["Is it red?", "Does it have wings?", "Is it outdoors?"]


def p_yes(image_index: int, question_index: int) -> float:
    return 0.05 + 0.1 * image_index + 0.2 * question_index


class FakeServer:
    """A chat-completions endpoint with scripted failures; records every request body it receives."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status_script: list[int] = []  # statuses to return before answering normally (e.g. [429, 429])
        self.always_status: int | None = None
        self.missing_for_image: int | None = None  # top_logprobs without Yes and No
        self.yes_only_for_image: int | None = None  # top_logprobs with Yes but not No
        self.no_logprobs = False
        self.raw_reply: bytes | None = None  # a 200 whose body is not JSON (a proxy's HTML page)
        self.usage_tokens: int | None = None  # usage.prompt_tokens = this + image index (None: no usage sent)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    status = server.always_status or (server.status_script.pop(0) if server.status_script else 200)
                if server.raw_reply is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(server.raw_reply)))
                    self.end_headers()
                    self.wfile.write(server.raw_reply)
                    return
                if status != 200:
                    self._send(
                        status, {"error": {"message": "scripted failure", "type": "server_error"}}, {"retry-after": "0"}
                    )
                    return
                self._send(200, server.reply(body))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def reply(self, body: dict) -> dict:
        user = body["messages"][-1]["content"]
        url = next(part["image_url"]["url"] for part in user if part["type"] == "image_url")
        text = next(part["text"] for part in user if part["type"] == "text")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        image_index = image.getpixel((0, 0))[0] // 10
        question_index = next(i for i, q in enumerate(QUESTIONS) if text.startswith(q))
        p = p_yes(image_index, question_index)
        top = {"Yes": math.log(p), "No": math.log(0.9 - p), "Maybe": math.log(0.1)}
        if image_index == self.missing_for_image:
            top = {"Maybe": math.log(0.6), "yes": math.log(0.3), " No": math.log(0.1)}
        if image_index == self.yes_only_for_image:
            top = {"Yes": math.log(p), "Maybe": math.log(0.1)}
        first = max(top, key=top.get)
        entry = {
            "token": first,
            "logprob": top[first],
            "bytes": None,
            "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top.items()],
        }
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": first},
            "finish_reason": "length",
            "logprobs": None if self.no_logprobs else {"content": [entry]},
        }
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}
        if self.usage_tokens is not None:
            reply["usage"] = {"prompt_tokens": self.usage_tokens + image_index, "completion_tokens": 1}
        return reply

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def data(tmp_path: Path) -> dict:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((10, 20, 3), (10 * i, 50, 60), dtype=np.uint8)).save(root / f"img_{i}.png")
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(q + "\n" for q in QUESTIONS))
    return {"root": root, "questions": screened(questions), "out": tmp_path / "aspects.json"}


def run(server: FakeServer, data: dict, *extra) -> int:
    argv = ["--backend", "openai", "--base-url", server.url, "--model", "served-internvl", "--questions",
            str(data["questions"]), "--images", str(data["root"]), "--output", str(data["out"]), "--top-logprobs", "5",
            "--concurrency", "4", "--max-retries", "2", "--retry-backoff", "0.01", "--no-progress"]  # fmt: skip
    return main([*argv, *map(str, extra)])


def test_p_yes_from_served_logprobs_and_request_shape(server, data):
    assert run(server, data, "--paper-suffix") == 0
    table = read_aspect_file(data["out"], expected_aspects=3)
    assert table.ids == ["img_0", "img_1", "img_2", "img_3"]
    expected = [[p_yes(i, q) / 0.9 for q in range(3)] for i in range(4)]  # renormalised over Yes + No = 0.9
    np.testing.assert_allclose(table.values, expected, rtol=1e-6)
    assert len(server.requests) == 12
    body = server.requests[0]
    assert body["model"] == "served-internvl" and body["max_tokens"] == 1 and body["logprobs"] is True
    assert body["top_logprobs"] == 5 and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["user"]  # no system message: the server's template decides
    text = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
    assert text.endswith(" " + PAPER_ANSWER_SUFFIX)
    url = next(p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert sent.shape == (10, 20, 3) and sent[0, 0, 1:].tolist() == [50, 60]  # pixels arrive intact
    meta = read_sidecar(data["out"])
    assert meta["teacher"]["backend"] == "openai" and meta["teacher"]["server_path"] == "/v1"
    assert "127.0.0.1" not in data["out"].with_name("aspects.json.meta.json").read_text()


def test_missing_yes_no_row_is_reported_not_invented(server, data, capsys):
    server.missing_for_image = 2
    server.yes_only_for_image = 3
    assert run(server, data, "--system-prompt", "Answer briefly.") == 0
    table = read_aspect_file(data["out"])
    assert table.ids == ["img_0", "img_1", "img_3"]
    # Only Yes listed: No is bounded by the smallest listed logprob (Maybe, 0.1).
    np.testing.assert_allclose(table.values[2], [p_yes(3, q) / (p_yes(3, q) + 0.1) for q in range(3)], rtol=1e-6)
    meta = read_sidecar(data["out"])
    assert [s["id"] for s in meta["skipped_images"]] == ["img_2"]
    assert "no Yes/No probability for question(s) [1, 2, 3]" in meta["skipped_images"][0]["reason"]
    assert meta["teacher"]["one_sided_answers"] == 3
    assert "img_2.png" in capsys.readouterr().err
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Answer briefly."}


def test_rate_limited_requests_are_retried(server, data):
    server.status_script = [429, 429]
    assert run(server, data) == 0
    assert len(server.requests) == 14  # 12 answers + 2 refused
    assert read_sidecar(data["out"])["teacher"]["retries"] == 2
    np.testing.assert_allclose(
        read_aspect_file(data["out"]).values[1], [p_yes(1, q) / 0.9 for q in range(3)], rtol=1e-6
    )


def test_persistent_server_error_stops_with_clear_message(server, data, capsys):
    server.always_status = 500
    assert run(server, data, "--concurrency", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 500" in err and "failed on all 3 tries" in err and "--resume" in err and len(err.splitlines()) == 1
    assert len(server.requests) == 3  # first request tried 1 + 2 retries, then the run stopped
    assert not data["out"].exists() and partial_path(data["out"]).exists()


def test_reply_without_logprobs_is_refused(server, data, capsys):
    server.no_logprobs = True
    assert run(server, data) == 2
    assert "reply holds no logprobs" in capsys.readouterr().err


def test_reply_that_is_not_json_is_one_line(server, data, capsys):
    server.raw_reply = b"<html><h1>502 Bad Gateway</h1></html>"
    assert run(server, data, "--concurrency", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sent a reply that is not JSON" in err[0] and "502 Bad Gateway" in err[0]
    assert len(server.requests) == 1  # not retried: a wrong endpoint does not become right


def test_rate_limiter_spaces_requests():
    limiter = RateLimiter(per_second=100.0)
    started = time.monotonic()
    threads = [threading.Thread(target=limiter.acquire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 0.05
    assert host_free("http://user:key@10.0.0.1:8000/v1") == "/v1"


def test_cost_counts_answered_prompts_and_the_servers_prompt_tokens(server, data):
    server.usage_tokens = 300  # image i costs 300 + i prompt tokens per question
    server.status_script = [429]  # a retried request is paid once, from its successful reply
    assert run(server, data) == 0
    meta = read_sidecar(data["out"])
    expected = {"prompts_scored": 12, "prompt_tokens": 3 * (300 + 301 + 302 + 303)}
    assert {k: meta["cost"][k] for k in expected} == expected
    assert meta["cost"]["tokens_processed"] == expected["prompt_tokens"]  # the server's count, prefix cache unseen
    assert meta["cost_this_run"]["prompts_scored"] == 12 and meta["cost"]["seconds"] > 0
