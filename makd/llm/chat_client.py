"""One chat request to any OpenAI-compatible server (OpenAI, vLLM, SGLang, LMDeploy, ...) via the `openai` client.

Adds what stage 1 needs around the client: bounded retries with exponential backoff on timeouts,
connection errors, 429 and 5xx (the client's own retries are off so the policy lives here);
structured output (JSON object mode) with a fallback when a server rejects it; the reply cache;
and one-line errors that never contain the API key.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from makd.errors import MakdError
from makd.llm.response_cache import ResponseCache, request_hash

log = logging.getLogger(__name__)

OPENAI_HOST = "api.openai.com"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
JSON_MODES = ("auto", "on", "off")


class LLMError(MakdError, RuntimeError):
    """A request to the LLM failed, or its replies could not be used; the message is one line."""


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries per request; waits backoff, 2*backoff, 4*backoff ... (at most max_backoff) seconds."""

    attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 60.0


@dataclass(frozen=True)
class ChatReply:
    """A reply's text, the hash of its request, whether it came from the cache and whether JSON mode was on."""

    text: str
    request_hash: str
    cached: bool
    json_mode: bool
    served_model: str = ""


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


def resolve_api_key(base_url: str, environ: Mapping[str, str]) -> str:
    """The key from OPENAI_API_KEY; required for api.openai.com, a placeholder for servers that need none."""
    key = environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    if server_host(base_url).split(":")[0] == OPENAI_HOST:
        raise LLMError(
            f"OPENAI_API_KEY is not set but {OPENAI_HOST} needs a key; export OPENAI_API_KEY, "
            "or pass --base-url for a server that needs none"
        )
    return "EMPTY"  # the openai client insists on some key; local servers ignore it


def scrub(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced by ***."""
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text


class ChatClient:
    """Sends chat requests with retries, structured output and caching; counts what it did."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        cache: ResponseCache | None = None,
        json_mode: str = "auto",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if json_mode not in JSON_MODES:
            raise ValueError(f"json_mode {json_mode!r} must be one of {', '.join(JSON_MODES)}")
        import openai  # imported here so --dry-run and the class readers start fast

        self._openai = openai
        self.base_url = sanitized_base_url(base_url)
        self.host = server_host(base_url)
        self._key = api_key
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)
        self.retry = retry
        self.cache = cache
        self.json_mode = json_mode
        self.json_supported = json_mode != "off"
        self._sleep = sleep
        self.requests_sent = 0  # HTTP requests, retries included
        self.cache_hits = 0

    def complete(
        self, messages: Sequence[Mapping[str, str]], *, model: str, temperature: float, seed: int | None, label: str
    ) -> ChatReply:
        """The assistant's reply to `messages`; `label` names the step in messages ("generate round 1")."""
        request = {
            "base_url": self.base_url,
            "model": model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
            "seed": seed,
            "json_mode": self.json_mode,
        }
        key = request_hash(request)
        if self.cache is not None:
            entry = self.cache.get(key)
            if entry is not None:
                self.cache_hits += 1
                log.info("%s: reply taken from the cache (%s)", label, key[:12])
                return ChatReply(entry["reply"], key, True, bool(entry.get("json_mode")), entry.get("served_model", ""))
        payload: dict[str, Any] = {"model": model, "messages": request["messages"], "temperature": temperature}
        if seed is not None:
            payload["seed"] = seed
        use_json = self.json_supported
        try:
            response = self._send(payload, use_json, label)
        except self._openai.BadRequestError as err:
            if not (use_json and self.json_mode == "auto"):
                hint = " (JSON mode was on; try --json-mode auto or off)" if use_json else ""
                raise LLMError(self._describe(err, label) + hint) from None
            # Servers without structured output answer 400; plain lists are parsed as well.
            log.warning("%s: %s rejected JSON mode (%s); asking again without it", label, self.host, err.status_code)
            self.json_supported = use_json = False
            try:
                response = self._send(payload, False, label)
            except self._openai.BadRequestError as err2:
                raise LLMError(self._describe(err2, label)) from None
        text = self._reply_text(response, label)
        served = str(getattr(response, "model", "") or "")
        if self.cache is not None:
            self.cache.put(key, request, text, json_mode=use_json, served_model=served)
        return ChatReply(text, key, False, use_json, served)

    def _send(self, payload: dict, use_json: bool, label: str) -> Any:
        openai = self._openai
        body = dict(payload, response_format={"type": "json_object"}) if use_json else payload
        for attempt in range(1, self.retry.attempts + 1):
            self.requests_sent += 1
            try:
                return self._client.chat.completions.create(**body)
            except openai.APITimeoutError as err:
                failure, reason = err, "timed out"
            except openai.APIConnectionError as err:
                failure, reason = err, "connection failed"
            except openai.BadRequestError:
                raise
            except openai.APIStatusError as err:
                if err.status_code not in RETRY_STATUSES:
                    raise LLMError(self._describe(err, label)) from None
                failure, reason = err, f"HTTP {err.status_code}"
            if attempt == self.retry.attempts:
                raise LLMError(
                    f"{label}: {self.host} failed on all {attempt} tries (last: {reason}: "
                    f"{self._short(failure)}); nothing was written. Retry later or raise --retries/--timeout"
                )
            delay = self._delay(attempt, failure)
            log.warning(
                "%s: %s %s; try %d of %d in %.2f s", label, self.host, reason, attempt + 1, self.retry.attempts, delay
            )
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, failure: Exception) -> float:
        delay = self.retry.backoff * 2 ** (attempt - 1) * random.uniform(1.0, 1.25)  # jitter spreads retries
        response = getattr(failure, "response", None)
        after = response.headers.get("retry-after") if response is not None else None
        if after:
            try:
                delay = max(delay, float(after))
            except ValueError:
                pass  # an HTTP date; the exponential delay is used instead
        return min(delay, self.retry.max_backoff)

    def _reply_text(self, response: Any, label: str) -> str:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise LLMError(f"{label}: {self.host} returned no choices; check that the server speaks the chat API")
        text = choices[0].message.content
        if not text or not text.strip():
            finish = getattr(choices[0], "finish_reason", None)
            raise LLMError(
                f"{label}: {self.host} returned an empty reply (finish_reason {finish!r}); try another model"
            )
        return text

    def _short(self, err: Exception) -> str:
        return scrub(" ".join(str(getattr(err, "message", "") or err).split())[:200], self._key)

    def _describe(self, err: Exception, label: str) -> str:
        status = getattr(err, "status_code", "?")
        hint = {
            401: "check OPENAI_API_KEY",
            403: "check that the key may use this model",
            404: "check --model and --base-url",
        }.get(status, "check --model, --base-url and the prompts")
        return f"{label}: {self.host} answered HTTP {status} ({self._short(err)}); {hint}"
