"""The one OpenAI-compatible client layer of stages 1 and 2, against the real loopback server of llm_server.py.

Retries (which statuses, how many, how long: Retry-After, jitter, cap), the one-line errors, and replies the
`openai` client lets through unchecked (not JSON, an error body, content as a list of parts, no choices).
"""

from __future__ import annotations

import random
import socket

import pytest
from llm_server import Reply, ScriptedLLMServer, completion

from makd.errors import MakdError
from makd.llm.chat_client import ChatClient, LLMError
from makd.llm.openai_client import (
    OpenAIClient,
    OpenAIRequestError,
    RetryPolicy,
    message_text,
    resolve_api_key,
    retry_after_seconds,
)
from makd.mllm.openai_scorer import OpenAICompatibleScorer

KEY = "sk-CLIENT-TEST-0123456789"
BODY = {"model": "m", "messages": [{"role": "user", "content": "Is it red?"}]}


def client(server_url: str, attempts: int = 5, max_backoff: float = 60.0) -> tuple[OpenAIClient, list[float]]:
    waits: list[float] = []  # the waits the policy chose, instead of sleeping them
    made = OpenAIClient(server_url, KEY, timeout=5, retry=RetryPolicy(attempts, 0.01, max_backoff),
                        failure_hint="rerun later", sleep=waits.append)  # fmt: skip
    return made, waits


def test_transient_statuses_are_retried_and_retry_after_is_honoured():
    script = [Reply(408), Reply(409), Reply(429, "slow down", {"retry-after": "7"}), Reply(503), "Yes."]
    with ScriptedLLMServer(script) as server:
        made, waits = client(server.base_url)
        reply = made.chat(BODY, "ask")
    assert reply["choices"][0]["message"]["content"] == "Yes."
    assert len(server.requests) == 5 and made.requests_sent == 5 and made.retries == 4
    assert all(r.body == server.requests[0].body for r in server.requests)  # the same request each time
    assert waits[2] == 7.0  # Retry-After is longer than the backoff: the server's wish wins
    for attempt, wait in zip((1, 2, 4), (waits[0], waits[1], waits[3])):
        assert 0.01 * 2 ** (attempt - 1) <= wait <= 0.01 * 2 ** (attempt - 1) * 1.25 + 1e-12


def test_every_wait_is_capped_and_the_last_failure_is_one_line():
    script = [Reply(429, "busy", {"retry-after": "3600"})] * 3
    with ScriptedLLMServer(script) as server:
        made, waits = client(server.base_url, attempts=3, max_backoff=2.5)
        with pytest.raises(OpenAIRequestError) as caught:
            made.chat(BODY, "ask")
    assert waits == [2.5, 2.5]  # an hour asked, 2.5 s allowed
    message = caught.value.args[0]
    assert message == f"ask: 127.0.0.1:{server.port} failed on all 3 tries (last: HTTP 429: busy); rerun later"


def test_jitter_spreads_waits_within_the_documented_range():
    policy = RetryPolicy(attempts=5, backoff=1.0, max_backoff=60.0, jitter=0.25)
    draws = [policy.delay(3, rng=random.Random(seed)) for seed in range(20)]
    assert all(4.0 <= d <= 5.0 for d in draws) and len(set(draws)) == 20
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None


def test_a_client_error_is_not_retried_and_the_key_is_scrubbed():
    with ScriptedLLMServer([Reply(401, f"Incorrect API key provided: {KEY}")]) as server:
        made, waits = client(server.base_url)
        with pytest.raises(OpenAIRequestError) as caught:
            made.chat(BODY, "ask")
    assert len(server.requests) == 1 and waits == []
    message = caught.value.args[0]
    assert "HTTP 401" in message and "check OPENAI_API_KEY" in message and KEY not in message and "***" in message


def test_connection_errors_are_retried():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    made, waits = client(f"http://127.0.0.1:{port}/v1", attempts=2)
    with pytest.raises(OpenAIRequestError, match="failed on all 2 tries \\(last: connection failed"):
        made.chat(BODY, "ask")
    assert len(waits) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, raw=b"<html><body>Welcome to nginx!</body></html>"), "sent a reply that is not JSON"),
        (Reply(200, payload={"error": {"message": "model overloaded"}}), "answered with an error: model overloaded"),
        (Reply(200, payload=[1, 2]), "sent a JSON list, not a reply object"),
    ],
)
def test_replies_the_openai_client_lets_through_become_one_line(reply, message):
    with ScriptedLLMServer([reply]) as server:
        made, _ = client(server.base_url)
        with pytest.raises(OpenAIRequestError) as caught:
            made.chat(BODY, "ask")
    assert message in caught.value.args[0] and "\n" not in caught.value.args[0]
    assert len(server.requests) == 1  # a wrong server does not become right by asking again


def content_payload(content) -> dict:
    payload = completion("", "m")
    payload["choices"][0]["message"]["content"] = content
    return payload


def test_stage_1_joins_text_parts_and_refuses_what_is_not_text():
    parts = [{"type": "text", "text": '{"questions": '}, {"type": "text", "text": '["Is it red?"]}'}]
    no_choices = completion("", "m")
    no_choices.pop("choices")
    script = [Reply(payload=content_payload(parts)), Reply(payload=content_payload([{"type": "image_url"}])),
              Reply(payload=no_choices)]  # fmt: skip
    with ScriptedLLMServer(script) as server:
        chat = ChatClient(server.base_url, KEY, timeout=5, retry=RetryPolicy(1, 0.0), json_mode="off")
        reply = chat.complete(BODY["messages"], model="m", temperature=0.0, seed=None, label="generate")
        assert reply.text == '{"questions": ["Is it red?"]}'
        with pytest.raises(LLMError, match="non-text content part"):
            chat.complete(BODY["messages"], model="m", temperature=0.5, seed=None, label="generate")
        with pytest.raises(LLMError, match="holds no choices"):
            chat.complete(BODY["messages"], model="m", temperature=0.7, seed=None, label="generate")
    assert message_text({"content": None}, "x") == ""


def test_both_stages_use_this_layer_and_share_the_key_rule(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key("http://127.0.0.1:8000/v1", {}) == "EMPTY"
    assert resolve_api_key("http://127.0.0.1:8000/v1", {"OPENAI_API_KEY": "env"}, explicit="flag") == "flag"
    with pytest.raises(MakdError, match="OPENAI_API_KEY is not set"):
        resolve_api_key("https://api.openai.com/v1", {})
    stage1 = ChatClient("http://127.0.0.1:9/v1", "k")
    stage2 = OpenAICompatibleScorer("http://127.0.0.1:9/v1", "m", concurrency=1)
    try:
        assert type(stage1.transport) is OpenAIClient and type(stage2.transport) is OpenAIClient
    finally:
        stage2.close()
