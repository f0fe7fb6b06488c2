"""The one OpenAI-compatible client layer of stages 1 and 2: construction, key, retries, reply checks, errors.

Both stages send chat-completion requests to any OpenAI-compatible server (OpenAI, vLLM, SGLang, LMDeploy)
through the `openai` client with its own retries off, so one policy lives here: bounded tries on timeouts,
connection errors, 408, 409, 429 and 5xx, exponential backoff with jitter, `Retry-After` honoured, every wait
capped. The `openai` client does not validate what a server sends back, so the reply body is parsed as JSON
here and handed over as plain dicts; a reply that is not JSON or lacks what the caller needs becomes one line.
The API key never appears in a message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from makd.errors import MakdError, one_line

log = logging.getLogger(__name__)

OPENAI_HOST = "api.openai.com"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# 408 request timeout and 409 conflict (a busy server's lock) are transient like 429 and 5xx.
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
STATUS_HINTS = {
    401: "check OPENAI_API_KEY",
    403: "check that the key may use this model",
    404: "check --model and --base-url",
}


class OpenAIRequestError(MakdError, RuntimeError):
    """A request to an OpenAI-compatible server failed for good, or its reply is unusable (one line)."""


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries per request; the n-th retry waits backoff * 2**(n-1) * U(1, 1 + jitter) seconds, or the
    server's Retry-After when longer, never more than `max_backoff`."""

    attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.25

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        draw = (rng or random).uniform(1.0, 1.0 + self.jitter)  # jitter spreads the retries of many clients
        delay = self.backoff * 2 ** (attempt - 1) * draw
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff)


def sanitized_base_url(base_url: str) -> str:
    """`base_url` without user:password, query or fragment (safe to store and hash)."""
    parts = urlsplit(base_url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def server_host(base_url: str) -> str:
    """host[:port] of `base_url`."""
    return urlsplit(sanitized_base_url(base_url)).netloc


def resolve_api_key(base_url: str, environ: Mapping[str, str], explicit: str | None = None) -> str:
    """`explicit`, else $OPENAI_API_KEY; required for api.openai.com, a placeholder for servers that need none."""
    key = (explicit or environ.get("OPENAI_API_KEY", "")).strip()
    if key:
        return key
    if server_host(base_url).split(":")[0] == OPENAI_HOST:
        raise OpenAIRequestError(
            f"OPENAI_API_KEY is not set but {OPENAI_HOST} needs a key; export OPENAI_API_KEY, "
            "or pass --base-url for a server that needs none"
        )
    return "EMPTY"  # the openai client insists on some key; local servers ignore it


def scrub(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced by ***."""
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested wait: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    after = headers.get("retry-after")
    if not after:
        return None
    try:
        return max(0.0, float(after))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(after)
    except (TypeError, ValueError):
        return None  # neither seconds nor a date: the backoff decides
    return max(0.0, when.timestamp() - time.time())


def message_text(message: Mapping[str, Any], where: str) -> str:
    """The text of an assistant message; content given as a list of text parts is joined (vLLM, some proxies)."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") in ("text", "output_text", None):
                if not isinstance(part.get("text"), str):
                    raise OpenAIRequestError(
                        f"{where}: a content part of the reply has no text ({one_line(repr(part))[:120]})"
                    )
                texts.append(part["text"])
            elif isinstance(part, Mapping) and part.get("type") in ("refusal",):
                raise OpenAIRequestError(f"{where}: the model refused ({one_line(str(part.get('refusal')))[:200]})")
            else:
                raise OpenAIRequestError(
                    f"{where}: the reply holds a non-text content part ({one_line(repr(part))[:120]}); "
                    "only text replies can be used"
                )
        return "".join(texts)
    raise OpenAIRequestError(f"{where}: the reply's message content is a {type(content).__name__}, not text")


def first_choice(reply: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """reply["choices"][0], checked."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise OpenAIRequestError(f"{where}: the reply holds no choices; check that the server speaks the chat API")
    return choices[0]


class OpenAIClient:
    """Sends chat-completion requests with the retry policy; returns each reply's JSON body as a dict.

    Thread-safe (stage 2 sends from several threads); `requests_sent` counts HTTP requests, retries included,
    and `retries` the retried ones.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        failure_hint: str = "retry later",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai  # imported here so commands that never send a request start fast

        self._openai = openai
        self.base_url = sanitized_base_url(base_url)
        self.host = server_host(base_url)
        self._key = api_key
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)
        self.retry = retry or RetryPolicy()
        self.failure_hint = failure_hint  # what to do after the last try failed, e.g. "rerun with --resume"
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0

    def chat(self, body: Mapping[str, Any], label: str, before_try: Callable[[], None] | None = None) -> dict:
        """POST /chat/completions with `body`; the reply's JSON object. `label` names the request in messages.

        `before_try` runs before every try (a rate limiter, or a check that raises to abandon the request).
        A 400 is raised as `openai.BadRequestError` so a caller can react (e.g. drop JSON mode); any other
        failure is an OpenAIRequestError.
        """
        openai = self._openai
        for attempt in range(1, self.retry.attempts + 1):
            if before_try is not None:
                before_try()
            with self._lock:
                self.requests_sent += 1
            try:
                raw = self._client.chat.completions.with_raw_response.create(**body)
                return self._parse(raw.text, label)
            except openai.APITimeoutError as err:
                failure, reason = err, "timed out"
            except openai.APIConnectionError as err:
                failure, reason = err, "connection failed"
            except openai.BadRequestError:
                raise
            except openai.APIStatusError as err:
                if err.status_code not in RETRY_STATUSES:
                    raise OpenAIRequestError(self.describe(err, label)) from None
                failure, reason = err, f"HTTP {err.status_code}"
            if attempt == self.retry.attempts:
                raise OpenAIRequestError(
                    f"{label}: {self.host} failed on all {attempt} tries (last: {reason}: {self.short(failure)}); "
                    f"{self.failure_hint}"
                )
            response = getattr(failure, "response", None)
            delay = self.retry.delay(attempt, retry_after_seconds(response.headers if response is not None else None))
            with self._lock:
                self.retries += 1
            log.warning("%s: %s %s; try %d of %d in %.2f s", label, self.host, reason, attempt + 1,
                        self.retry.attempts, delay)  # fmt: skip
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _parse(self, text: str, label: str) -> dict:
        try:
            reply = json.loads(text)
        except ValueError:
            raise OpenAIRequestError(
                f"{label}: {self.host} sent a reply that is not JSON ({scrub(one_line(text), self._key)[:120]!r}); "
                "check that --base-url points at an OpenAI-compatible API (often ending in /v1)"
            ) from None
        if not isinstance(reply, dict):
            raise OpenAIRequestError(f"{label}: {self.host} sent a JSON {type(reply).__name__}, not a reply object")
        if "error" in reply and "choices" not in reply:  # some proxies answer 200 with an error body
            raise OpenAIRequestError(f"{label}: {self.host} answered with an error: {self.short(reply['error'])}")
        return reply

    def short(self, err: Any) -> str:
        """A failure (exception or error body) as at most 200 characters on one line, the key removed."""
        body = getattr(err, "body", None)  # an HTTP error's parsed {"message": ...}: without "Error code: 429 - "
        text = body.get("message") if isinstance(body, Mapping) and body.get("message") else None
        text = text or getattr(err, "message", None) or err
        if isinstance(text, Mapping):
            text = text.get("message") or json.dumps(text)
        return scrub(one_line(str(text))[:200], self._key)

    def describe(self, err: Exception, label: str, hint: str | None = None) -> str:
        """One line for an HTTP error that retrying cannot fix."""
        status = getattr(err, "status_code", "?")
        hint = hint or STATUS_HINTS.get(status, "check --model, --base-url and the request")
        return f"{label}: {self.host} answered HTTP {status} ({self.short(err)}); {hint}"

    def close(self) -> None:
        self._client.close()
