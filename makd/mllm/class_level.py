"""Stage 2 at class level: a text-only LLM answers every question about every class name (LaViD-style).

`make_makd_logits_json.py --level class --classes FILE --questions FILE --model M --output OUT.json` asks each
question with the class name filled in (makd.mllm.class_prompts) and reads the answer from the logits of the
first answer token, as at image level: P(yes) = softmax([logit_Yes, logit_No])[0] for a yes/no question, the
softmax over the option letters' logits for a multiple-choice one. Output `{class: [p_1..p_Q]}` or
`{class: [[p_q1..p_qM], ...]}` (+ sidecar: model, chat template, token ids, prompts, cost), resumable through
`<output>.partial.jsonl` (one row per class). Several --class-template paraphrases are averaged in
probability space (the mean of the per-template distributions, itself a distribution).

Backends: a transformers causal LM in this process with the model's own chat template (prompts left-padded
and batched, longest first, only the last position through the LM head), or an OpenAI-compatible server
(max_tokens=1 and top_logprobs, renormalised over the answer words).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from collections.abc import Sequence
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

import makd
from makd.atomic_files import check_output_location
from makd.errors import MakdError
from makd.formats.class_questions import ClassQuestion, read_class_questions
from makd.formats.files import utc_now
from makd.formats.questions import questions_sha256
from makd.formats.target_sources.per_class import write_class_rows
from makd.llm.class_source import read_classes
from makd.mllm.class_prompts import answer_words, check_templates, class_query, default_templates
from makd.mllm.cost import Cost, CostMeter, total_cost
from makd.mllm.errors import ExtractionError
from makd.mllm.model_loading import ModelLoadError, resolve_device, resolve_dtype
from makd.mllm.openai_scorer import OpenAICompatibleScorer
from makd.mllm.partial_rows import PartialWriter, partial_path, read_partial, settings_mismatch
from makd.mllm.tiny_teacher import tiny_marker
from makd.mllm.yes_no import resolve_answer_token

TOOL = "make_makd_logits_json.py --level class"
# Settings that do not change the numbers (a resumed run may differ in them).
DEFAULT_BATCH_SIZE = 32  # prompts per forward; each is a short text prompt of its own
VOLATILE_KEYS = ("device", "batch_size", "concurrency", "rate_limit", "retries", "one_sided_answers", "answer_ids")


def renormalised(values: Sequence[float]) -> np.ndarray:
    """softmax of logits or log-probabilities, float64."""
    x = np.asarray(values, dtype=np.float64)
    x = np.exp(x - x.max())
    return x / x.sum()


class CausalLMScorer:
    """Answer distributions from a transformers causal LM, prompts built with the tokenizer's chat template."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = DEFAULT_BATCH_SIZE,
                 system_message: str | None = None, info: dict | None = None) -> None:  # fmt: skip
        if batch_size < 1:
            raise ExtractionError(f"--batch-size must be >= 1, got {batch_size}")
        if not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError("the tokenizer has no chat template; class level needs the model's own chat template")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.system_message = system_message
        self.info = dict(info or {})
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ModelLoadError("the tokenizer has neither a pad nor an eos token; batching needs one to pad with")
        self.pad_id = int(pad)
        self.cost = Cost()
        self.answer_ids: dict[str, int] = {}
        self.keep_last_only = True
        # The text right before the first answer token: the generation prompt of any rendered chat.
        self.answer_context = self.prompt("Is it?")

    def prompt(self, query: str) -> str:
        """The full prompt string: the chat template with the generation prompt (assistant turn opened)."""
        messages = [{"role": "user", "content": query}]
        if self.system_message is not None:
            messages.insert(0, {"role": "system", "content": self.system_message})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, query: str) -> list[int]:
        # The rendered template already holds the special tokens (as apply_chat_template(tokenize=True) does).
        return list(self.tokenizer(self.prompt(query), add_special_tokens=False)["input_ids"])

    def token_id(self, word: str) -> int:
        if word not in self.answer_ids:
            self.answer_ids[word] = resolve_answer_token(self.tokenizer, word, self.answer_context)
        return self.answer_ids[word]

    @torch.inference_mode()
    def distributions(self, queries: Sequence[str], words: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
        """Per query, the softmax over its answer words' logits at the first answer position, float64 [M]."""
        ids = [self.prompt_ids(q) for q in queries]
        wanted = [[self.token_id(w) for w in ws] for ws in words]
        out: list[np.ndarray | None] = [None] * len(queries)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths together: little padding
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in batch)
            tokens = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends at the last column
                tokens[row, width - len(ids[i]) :] = torch.tensor(ids[i])
                mask[row, width - len(ids[i]) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each prompt's positions start at 0, as unpadded
            logits = self._last_logits(tokens, mask, positions)  # [B, vocab] float32
            for row, i in enumerate(batch):
                out[i] = renormalised(logits[row, wanted[i]].cpu().tolist())
            self.cost.prompt_tokens += sum(len(ids[i]) for i in batch)
            self.cost.tokens_processed += len(batch) * width
        self.cost.prompts += len(queries)
        return out

    def _last_logits(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        inputs = {"input_ids": tokens, "attention_mask": mask, "position_ids": positions}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if self.keep_last_only:
            try:  # only the last position through the LM head (transformers' causal LMs)
                return self.model(**inputs, logits_to_keep=1).logits[:, -1].float()
            except TypeError:  # a remote-code model without logits_to_keep: full logits, same numbers
                self.keep_last_only = False
        return self.model(**inputs).logits[:, -1].float()

    def describe(self) -> dict:
        template = self.tokenizer.chat_template
        return {
            **self.info,
            "template": "the tokenizer's chat template",
            "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
            "system_message": self.system_message,
            "answer_ids": dict(self.answer_ids),
            "batch_size": self.batch_size,
            "scoring": "left-padded batches, last position only, softmax over the answer words' logits",
        }


class ServerTextScorer(OpenAICompatibleScorer):
    """Answer distributions from a text-only model behind an OpenAI-compatible server (one request per prompt)."""

    def text_messages(self, query: str) -> list[dict]:
        user = {"role": "user", "content": query}
        return [user] if self.system_message is None else [{"role": "system", "content": self.system_message}, user]

    def prompt(self, query: str) -> str:
        return query  # the server's chat template builds the rest

    def distributions(self, queries: Sequence[str], words: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
        self._failed.clear()
        futures = [self._pool.submit(self.one, q, ws) for q, ws in zip(queries, words)]
        wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the real failure, not a request abandoned because of it
            raise next((e for e in errors if isinstance(e, MakdError)), errors[0])
        self.cost.prompts += len(queries)
        return [f.result() for f in futures]

    def one(self, query: str, words: Sequence[str]) -> np.ndarray | None:
        try:
            reply = self._request(self.text_messages(query))
        except Exception:
            self._failed.set()
            raise
        top = self._top_logprobs(reply)
        listed = [top.get(w) for w in words]
        if all(v is None for v in listed):
            return None  # nothing invented: the class's row is retried on --resume
        if any(v is None for v in listed):
            # an unlisted word's log-probability is at most the smallest listed one; that bound is used
            with self._lock:
                self.one_sided += 1
            floor = min(top.values())
            listed = [floor if v is None else v for v in listed]
        return renormalised(listed)

    def describe(self) -> dict:
        info = super().describe()
        info.pop("tiling", None)
        info["scoring"] = "max_tokens=1, logprobs renormalised over the answer words"
        return info


def load_causal_lm(model_id: str, backend: str, device: str, dtype: str, revision: str | None):
    """(model, tokenizer, info) of a transformers causal LM (backend "remote": trust_remote_code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    remote = backend == "remote"
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, dtype=torch_dtype,
                                                     trust_remote_code=remote)  # fmt: skip
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"--model {model_id}: cannot load a causal LM ({first})") from None
    model.to(target)
    info = {
        "backend": backend,
        "model": model_id,
        "revision": revision,
        "model_type": getattr(model.config, "model_type", None),
        "dtype": str(torch_dtype).replace("torch.", ""),
        "device": str(target),
    }
    marker = tiny_marker(model_id)
    if marker is not None:  # --model tiny: every file it labels says that its numbers mean nothing
        info["tiny_teacher"] = marker
    return model, tokenizer, info


def build_class_scorer(args: argparse.Namespace):
    backend = args.backend
    if backend == "auto":
        backend = "openai" if args.base_url else "hf"
    if backend == "openai":
        if not args.base_url:
            raise ExtractionError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        return ServerTextScorer(base_url=args.base_url, model=args.model, api_key=args.api_key,
                                system_message=args.system_prompt, top_logprobs=args.top_logprobs,
                                concurrency=args.concurrency, max_retries=args.max_retries,
                                retry_backoff=args.retry_backoff, rate_limit=args.rate_limit,
                                timeout=args.timeout)  # fmt: skip
    model, tokenizer, info = load_causal_lm(args.model, backend, args.device, args.dtype, args.revision)
    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    return CausalLMScorer(model, tokenizer, batch_size, args.system_prompt, info)


def class_row(
    scorer, class_name: str, questions: Sequence[ClassQuestion], templates: Sequence[str], suffix: str,
    yes_word: str, no_word: str, labels: str = "letters",
) -> list[list[float]] | None:  # fmt: skip
    """Per question the answer distribution averaged over the templates; None if any answer was missing."""
    queries, words = [], []
    for question in questions:
        for template in templates:
            queries.append(class_query(question, class_name, template, suffix, labels))
            words.append(answer_words(question, yes_word, no_word, labels))
    answers = scorer.distributions(queries, words)
    if any(a is None for a in answers):
        return None
    n = len(templates)
    return [np.mean(answers[q * n : (q + 1) * n], axis=0).tolist() for q in range(len(questions))]


def _flat(row: list[list[float]], multiple_choice: bool) -> list[float]:
    return [x for dist in row for x in dist] if multiple_choice else [dist[0] for dist in row]


def _nested(flat: list[float], questions: Sequence[ClassQuestion]) -> list[float] | list[list[float]]:
    if not questions[0].is_multiple_choice:
        return list(flat)
    out, start = [], 0
    for q in questions:
        out.append(flat[start : start + len(q.options)])
        start += len(q.options)
    return out


def run_class_level(args: argparse.Namespace, suffix: str) -> dict:
    """Score every (class, question); write the class-level file and its sidecar. Returns the sidecar."""
    questions = read_class_questions(args.questions)
    classes = read_classes(args.classes).names
    templates = list(args.class_template or default_templates(questions))
    check_templates(templates, questions)
    for question in questions:  # too many options for the labels: refused before the model loads
        answer_words(question, labels=args.option_labels)
    output = Path(args.output)
    partial = partial_path(output)
    if output.exists() and not args.overwrite:
        raise ExtractionError(f"{output} exists; pass --overwrite to replace it")
    if partial.exists() and not (args.resume or args.overwrite):
        raise ExtractionError(f"{partial} exists (an interrupted run); pass --resume to continue or --overwrite")
    check_output_location(output, "--output")
    multiple_choice = questions[0].is_multiple_choice
    scorer = build_class_scorer(args)
    try:
        return _score_and_write(args, scorer, questions, classes, templates, suffix, output, multiple_choice)
    finally:
        if hasattr(scorer, "close"):
            scorer.close()


def _score_and_write(args, scorer, questions, classes, templates, suffix, output, multiple_choice) -> dict:
    lines = [q.line() for q in questions]
    settings = {
        "level": "class",
        "questions_sha256": questions_sha256(lines),
        "classes": classes,
        "templates": templates,
        "answer_suffix": suffix if not multiple_choice else "",
        "answer_words": [args.yes_word, args.no_word] if not multiple_choice else f"option {args.option_labels}",
        "teacher": {k: v for k, v in scorer.describe().items() if k not in VOLATILE_KEYS},
    }
    partial = partial_path(output)
    state = read_partial(partial) if args.resume and partial.exists() else None
    if state is not None and state.settings is not None:
        changed = settings_mismatch(state.settings, settings)
        if changed:
            raise ExtractionError(f"--resume: {partial} was written with other settings ({changed}); use --overwrite")
    rows: dict[str, list[float]] = dict(state.rows) if state else {}
    todo = [c for c in classes if c not in rows]
    prompts_per_class = len(questions) * len(templates)
    per_step = max(1, math.ceil(2 * max(getattr(scorer, "batch_size", 1), getattr(scorer, "concurrency", 1))
                                / prompts_per_class))  # fmt: skip
    writer = PartialWriter(partial, settings, state)
    failed: list[str] = []
    meter = CostMeter(scorer.cost)
    try:
        for start in range(0, len(todo), per_step):
            for name in todo[start : start + per_step]:
                row = class_row(
                    scorer, name, questions, templates, suffix, args.yes_word, args.no_word, args.option_labels
                )
                if row is None:
                    failed.append(name)
                    writer.add_error(name, "an answer word was not among the top log-probabilities")
                    continue
                rows[name] = _flat(row, multiple_choice)
                writer.add_row(name, rows[name])
            writer.add_cost(meter.increment())  # a resumed run's sidecar adds this run's cost to its own
            writer.flush()
    finally:
        writer.close()
    cost_this_run = meter.this_run()
    seconds = cost_this_run["seconds"]
    if failed:
        raise ExtractionError(
            f"{len(failed)} classes got no answer ({failed[0]!r} first; none of the answer words was listed); "
            f"finished classes are kept in {partial}; rerun with --resume (or raise --top-logprobs)"
        )
    result = {name: _nested(rows[name], questions) for name in classes}
    example = classes[0]
    meta = {
        "tool": TOOL,
        "tool_version": makd.__version__,
        "level": "class",
        "kind": "multiple_choice" if multiple_choice else "yes_no",
        "questions_file": str(args.questions),
        "questions_sha256": settings["questions_sha256"],
        "num_questions": len(questions),
        "questions": lines,
        "options_per_question": [len(q.options) for q in questions] if multiple_choice else None,
        "classes_file": str(args.classes),
        "num_classes": len(classes),
        "templates": templates,
        "paraphrases": "mean of the per-template answer distributions (probability space)",
        "answer_suffix": settings["answer_suffix"],
        "example_prompts": {
            "class": example,
            "prompts": [
                scorer.prompt(class_query(q, example, t, suffix, args.option_labels))
                for q in questions
                for t in templates
            ],
        },
        "teacher": scorer.describe(),
        "resumed_rows": len(state.rows) if state else 0,
        "cost": total_cost(state.cost if state else None, len(state.rows) if state else 0, cost_this_run),
        "cost_this_run": cost_this_run,
        "written": utc_now(),
    }
    write_class_rows(output, result, meta)
    partial_path(output).unlink(missing_ok=True)
    print(f"wrote {output} ({len(classes)} classes x {len(questions)} questions, {scorer.cost.prompts} prompts "
          f"in {seconds:.1f} s)", file=sys.stderr)  # fmt: skip
    return meta
