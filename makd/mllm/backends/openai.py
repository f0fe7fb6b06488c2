"""An OpenAI-compatible server (`--backend openai`, or auto with --base-url: vLLM, SGLang, LMDeploy, OpenAI):
P(yes) from the served model's first-token log-probabilities (makd.mllm.openai_scorer). The class level reads the
same server options."""

from __future__ import annotations

import argparse

from makd.mllm.errors import ExtractionError
from makd.mllm.scorer import BACKENDS, Scorer


@BACKENDS.register("openai")
class OpenAIServer:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        server = parser.add_argument_group("OpenAI-compatible server (--backend openai)")
        server.add_argument("--base-url", default=None, help="e.g. http://localhost:8000/v1")
        server.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY, else 'EMPTY'")
        server.add_argument(
            "--top-logprobs", type=int, default=20, help="alternatives requested at the answer position"
        )
        server.add_argument("--concurrency", type=int, default=8, help="requests in flight")
        server.add_argument(
            "--max-retries", type=int, default=4, help="retries on timeouts, connection, 408/409/429/5xx"
        )
        server.add_argument("--retry-backoff", type=float, default=1.0, help="first retry delay in s (doubles)")
        server.add_argument("--rate-limit", type=float, default=0.0, help="max requests per second (0 = no limit)")
        server.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in s")

    @staticmethod
    def build(args: argparse.Namespace, name: str, answer_suffix: str) -> Scorer:
        from makd.mllm.openai_scorer import OpenAICompatibleScorer

        if not args.base_url:
            raise ExtractionError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        return OpenAICompatibleScorer(
            base_url=args.base_url,
            model=args.model,
            api_key=args.api_key,
            system_message=args.system_prompt,
            answer_suffix=answer_suffix,
            yes_word=args.yes_word,
            no_word=args.no_word,
            top_logprobs=args.top_logprobs,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
            retry_backoff=args.retry_backoff,
            rate_limit=args.rate_limit,
            timeout=args.timeout,
        )
