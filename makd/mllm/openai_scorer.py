"""Scorer for a multimodal model behind an OpenAI-compatible server (vLLM, LMDeploy, SGLang, ...).

One chat request per (image, question): the image as a PNG data URL, `max_tokens=1`, `logprobs` with
`top_logprobs`; P(yes) is read from the Yes/No log-probabilities of the first answer position, renormalised
over the two. Transport, retries and reply parsing are the shared layer's (`makd.llm.openai_client`, as in
stage 1); the log-probabilities are validated here. Requests run concurrently, under an optional rate limit.
"""

from __future__ import annotations

import base64
import io
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from makd.llm.openai_client import OpenAIClient, OpenAIRequestError, RetryPolicy, first_choice, resolve_api_key
from makd.mllm.chat_template import with_answer_suffix
from makd.mllm.cost import Cost
from makd.mllm.yes_no import p_yes_from_top_logprobs

FAILURE_HINT = "finished rows are kept; rerun the same command with --resume when the server is healthy"


class ServerError(OpenAIRequestError):
    """The server failed, or replied with something that holds no usable log-probabilities."""


class _Abandoned(Exception):
    """A request not sent because another one already failed for good."""


class RateLimiter:
    """At most `per_second` acquisitions per second across threads (0 = unlimited)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        time.sleep(max(0.0, slot - now))


def image_data_url(image: Image.Image) -> str:
    """The decoded image re-encoded losslessly as a base64 PNG data URL."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def host_free(url: str) -> str:
    """`url` without scheme, host and credentials (only the path is recorded in sidecars)."""
    return urlparse(url).path or "/"


class OpenAICompatibleScorer:
    """P(yes) from a served model's first-token log-probabilities."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        system_message: str | None = None,
        answer_suffix: str = "",
        yes_word: str = "Yes",
        no_word: str = "No",
        top_logprobs: int = 20,
        concurrency: int = 8,
        max_retries: int = 4,
        retry_backoff: float = 1.0,
        rate_limit: float = 0.0,
        timeout: float = 120.0,
    ) -> None:
        if concurrency < 1:
            raise ServerError(f"--concurrency must be >= 1, got {concurrency}")
        if top_logprobs < 2:
            raise ServerError(f"--top-logprobs must be >= 2 to see both Yes and No, got {top_logprobs}")
        if max_retries < 0:
            raise ServerError(f"--max-retries must be >= 0, got {max_retries}")
        self.transport = OpenAIClient(
            base_url,
            resolve_api_key(base_url, os.environ, api_key),
            timeout=timeout,
            retry=RetryPolicy(attempts=max_retries + 1, backoff=retry_backoff),
            failure_hint=FAILURE_HINT,
        )
        self.base_url, self.model = base_url, model
        self.system_message, self.answer_suffix = system_message, answer_suffix
        self.yes_word, self.no_word = yes_word, no_word
        self.top_logprobs, self.concurrency = top_logprobs, concurrency
        self.max_retries, self.retry_backoff = max_retries, retry_backoff
        self.limiter = RateLimiter(rate_limit)
        self.rate_limit = rate_limit
        self.one_sided = 0
        self.cost = Cost()  # prompts answered; tokens as the server's usage.prompt_tokens reports them
        self._lock = threading.Lock()
        self._failed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="makd-openai")

    def prepare(self, image: Image.Image) -> str:
        return image_data_url(image)

    def score(self, images: Sequence[Any], questions: Sequence[str]) -> np.ndarray:
        """P(yes), float64 [len(images), Q]; NaN where neither Yes nor No was among the top log-probabilities."""
        urls = [self.prepare(i) if isinstance(i, Image.Image) else i for i in images]
        out = np.full((len(urls), len(questions)), np.nan)
        self._failed.clear()
        futures = {
            self._pool.submit(self.score_one, url, question): (row, col)
            for row, url in enumerate(urls)
            for col, question in enumerate(questions)
        }
        wait(futures)  # after a fatal error the remaining requests return at once (see _request)
        errors = [f.exception() for f in futures if f.exception() is not None]
        real = [e for e in errors if not isinstance(e, _Abandoned)]
        if errors:
            raise (real or errors)[0]
        for future, (row, col) in futures.items():
            value = future.result()
            out[row, col] = np.nan if value is None else value
        self.cost.prompts += len(futures)
        return out

    def score_one(self, url: str, question: str) -> float | None:
        """P(yes) for one image and question, or None when the reply lists neither answer."""
        try:
            top = self._top_logprobs(self._request(self._messages(url, question)))
        except OpenAIRequestError:
            self._failed.set()  # stops the other in-flight requests of this call
            raise
        answer = p_yes_from_top_logprobs(top, self.yes_word, self.no_word)
        if answer.one_sided:
            with self._lock:
                self.one_sided += 1
        return answer.p_yes

    def _messages(self, url: str, question: str) -> list[dict]:
        user = {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": with_answer_suffix(question, self.answer_suffix)},
            ],
        }
        if self.system_message is None:  # the server's chat template supplies the model's default
            return [user]
        return [{"role": "system", "content": self.system_message}, user]

    @property
    def retries(self) -> int:
        return self.transport.retries

    def _before_try(self) -> None:
        self.limiter.acquire()
        if self._failed.is_set():  # another request failed for good: do not keep hammering the server
            raise _Abandoned()

    def _request(self, messages: list[dict]) -> dict:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        label = f"model {self.model!r}"
        try:
            reply = self.transport.chat(body, label, self._before_try)
        except OpenAIRequestError as err:
            raise ServerError(*err.args) from None
        except self.transport._openai.BadRequestError as err:  # the request itself is wrong: retrying cannot help
            raise ServerError(self.transport.describe(err, label, "check --base-url, --model and the server")) from None
        usage = reply.get("usage") if isinstance(reply, dict) and isinstance(reply.get("usage"), dict) else {}
        tokens = usage.get("prompt_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            with self._lock:
                self.cost.prompt_tokens += tokens
                self.cost.tokens_processed += tokens
        return reply

    def _top_logprobs(self, reply: dict) -> dict[str, float]:
        """{token: logprob} of the first answer position, validated."""
        where = f"{self.transport.host} (model {self.model!r})"
        try:
            choice = first_choice(reply, where)
        except OpenAIRequestError as err:
            raise ServerError(*err.args) from None
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not isinstance(content, list) or not content or not isinstance(content[0], dict):
            raise ServerError(
                f"{where}: reply holds no logprobs; the server must support logprobs with top_logprobs "
                "(vLLM: --max-logprobs >= --top-logprobs)"
            )
        first = content[0]
        entries = first.get("top_logprobs") or []
        if not isinstance(entries, list):
            raise ServerError(f"{where}: top_logprobs is a {type(entries).__name__}, not a list")
        top: dict[str, float] = {}
        for entry in [*entries, first]:  # the sampled token itself counts too
            token = entry.get("token") if isinstance(entry, dict) else None
            value = entry.get("logprob") if isinstance(entry, dict) else None
            if not isinstance(token, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ServerError(f"{where}: malformed top_logprobs entry {entry!r:.120} (need a token and a logprob)")
            if math.isnan(value) or value > 1e-6:
                raise ServerError(f"{where}: logprob {value!r} of token {token!r} is not a log-probability")
            top[token] = max(float(value), top.get(token, -math.inf))
        return top

    def describe(self) -> dict:
        return {
            "backend": "openai",
            "model": self.model,
            "server_path": host_free(self.base_url),
            "template": "server chat template",
            "system_message": self.system_message,
            "answer_suffix": self.answer_suffix,
            "yes_no_tokens": {"yes": self.yes_word, "no": self.no_word, "yes_id": None, "no_id": None},
            "top_logprobs": self.top_logprobs,
            "tiling": "server-side",
            "one_sided_answers": self.one_sided,
            "retries": self.retries,
            "concurrency": self.concurrency,
            "rate_limit": self.rate_limit,
            "scoring": "max_tokens=1, logprobs renormalised over Yes/No",
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.transport.close()
