"""Stage 1's chat requests: structured output (JSON mode) with a fallback, the reply cache, the reply's text.

Transport, retries, key handling and the one-line errors are the shared layer's (`makd.llm.openai_client`,
also used by stage 2); this module adds what stage 1 needs around it: JSON object mode with a fallback when a
server rejects it, the reply cache (a re-run pays nothing twice) and the check that a reply holds text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from makd.llm.openai_client import OpenAIClient, OpenAIRequestError, RetryPolicy, first_choice, message_text
from makd.llm.response_cache import ResponseCache, request_hash

log = logging.getLogger(__name__)

JSON_MODES = ("auto", "on", "off")
PROMPT_HINT = "check --model, --base-url and the prompts"
FAILURE_HINT = "nothing was written. Retry later or raise --retries/--timeout"


class LLMError(OpenAIRequestError):
    """A request to the LLM failed, or its replies could not be used; the message is one line."""


@dataclass(frozen=True)
class ChatReply:
    """A reply's text, the hash of its request, whether it came from the cache and whether JSON mode was on."""

    text: str
    request_hash: str
    cached: bool
    json_mode: bool
    served_model: str = ""


class ChatClient:
    """Sends chat requests with retries, structured output and caching; counts what it did."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        cache: ResponseCache | None = None,
        json_mode: str = "auto",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if json_mode not in JSON_MODES:
            raise LLMError(f"json_mode {json_mode!r} must be one of {', '.join(JSON_MODES)}")
        self.transport = OpenAIClient(base_url, api_key, timeout=timeout, retry=retry, failure_hint=FAILURE_HINT,
                                      sleep=sleep)  # fmt: skip
        self._openai = self.transport._openai
        self.base_url = self.transport.base_url
        self.host = self.transport.host
        self.retry = self.transport.retry
        self.cache = cache
        self.json_mode = json_mode
        self.json_supported = json_mode != "off"
        self.cache_hits = 0

    @property
    def requests_sent(self) -> int:
        """HTTP requests, retries included."""
        return self.transport.requests_sent

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
                raise LLMError(self.transport.describe(err, label, PROMPT_HINT) + hint) from None
            # Servers without structured output answer 400; plain lists are parsed as well.
            log.warning("%s: %s rejected JSON mode (%s); asking again without it", label, self.host, err.status_code)
            self.json_supported = use_json = False
            try:
                response = self._send(payload, False, label)
            except self._openai.BadRequestError as err2:
                raise LLMError(self.transport.describe(err2, label, PROMPT_HINT)) from None
        text = self._reply_text(response, label)
        served = str(response.get("model") or "")
        if self.cache is not None:
            self.cache.put(key, request, text, json_mode=use_json, served_model=served)
        return ChatReply(text, key, False, use_json, served)

    def _send(self, payload: dict, use_json: bool, label: str) -> dict:
        body = dict(payload, response_format={"type": "json_object"}) if use_json else payload
        try:
            return self.transport.chat(body, label)
        except LLMError:
            raise
        except OpenAIRequestError as err:
            raise LLMError(*err.args) from None

    def _reply_text(self, response: dict, label: str) -> str:
        where = f"{label}: {self.host}"
        try:
            choice = first_choice(response, where)
            message = choice.get("message")
            if not isinstance(message, Mapping):
                raise OpenAIRequestError(f"{where}: the reply's first choice holds no message")
            text = message_text(message, where)
        except OpenAIRequestError as err:
            raise LLMError(*err.args) from None
        if not text.strip():
            raise LLMError(
                f"{where} returned an empty reply (finish_reason {choice.get('finish_reason')!r}); try another model"
            )
        return text
