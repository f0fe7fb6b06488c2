"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the tests of stage 1 and the shared client layer.

It answers POST /v1/chat/completions with the next entry of its script and records every request
(headers and JSON body), so a test drives the real `openai` client over real HTTP and then asserts
how many requests were made and what they said. A script entry is:
  - a str: a 200 reply whose assistant message is that text;
  - Reply(status, content, ...): any status (an error body for status >= 400), optional delay; `payload`
    replaces the whole JSON body and `raw` sends bytes that are not JSON at all (broken servers and proxies);
  - a callable(request_body) -> str | Reply, for replies that depend on the request.
An exhausted script answers 500 "script exhausted", so an unexpected extra request fails loudly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    content: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeouts)
    payload: dict[str, Any] | None = None  # the JSON body sent instead of a completion (malformed replies)
    raw: bytes | None = None  # a body that is not JSON, sent as text/html


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.body.get("messages", [])

    @property
    def last_user(self) -> str:
        return [m["content"] for m in self.messages if m["role"] == "user"][-1]


ScriptEntry = str | Reply | Callable[[dict], "str | Reply"]


def completion(content: str, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion object holding one assistant message."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class ScriptedLLMServer:
    """Context manager: `with ScriptedLLMServer([...]) as server: ... server.base_url ... server.requests`."""

    def __init__(self, script: list[ScriptEntry], reject_json_mode: bool = False, port: int = 0) -> None:
        self.script = list(script)
        self.reject_json_mode = reject_json_mode  # answer 400 to response_format, like servers without it
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        # port: 0 = any free port; a test reuses a finished server's port to keep the same URL.
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        # A short poll interval makes shutdown() return quickly (the default waits up to 0.5 s).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, body: dict) -> Reply:
        with self._lock:
            entry = self.script.pop(0) if self.script else Reply(500, "script exhausted")
        if callable(entry):
            entry = entry(body)
        return Reply(200, entry) if isinstance(entry, str) else entry

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                if server.reject_json_mode and "response_format" in body:
                    self._send(400, {"error": {"message": "response_format is not supported", "type": "invalid"}})
                    return
                reply = server._next(body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    self._send_bytes(reply.status, reply.raw, "text/html", reply.headers)
                    return
                if reply.payload is not None:
                    payload = reply.payload
                elif reply.status >= 400:
                    payload = {"error": {"message": reply.content or "error", "type": "server_error", "code": None}}
                else:
                    payload = completion(reply.content, body.get("model", ""))
                self._send(reply.status, payload, reply.headers)

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                self._send_bytes(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

            def _send_bytes(self, status: int, data: bytes, kind: str, headers: dict[str, str] | None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        return Handler
