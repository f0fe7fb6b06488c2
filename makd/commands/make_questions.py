"""`python tools/make_questions.py`: class names -> LLM (generate N, select Q) -> questions file + sidecar.

`--check FILE --classes CLASSES` screens a questions file written by hand instead, with the same screening, and
records the result in its sidecar (stage 2 warns about a file that was never screened).

`--kind multiple-choice` asks for LaViD-style questions about a class instead (`<object>` placeholder, exactly
`--options` options, the prompts of makd/llm/prompt_files/lavid_multiple_choice.yaml unless --prompts is given)
and writes the class-level questions file that `make_makd_logits_json.py --level class` reads.

The questions file is written only when it is complete, atomically, after its sidecar; the sidecar
records model, server host, prompts, N, Q, temperature, seed, every raw reply and the date (never
the API key). See docs/stage1.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import makd
from makd.atomic_files import check_output_location
from makd.errors import MakdError, one_line, run_command
from makd.formats.class_mentions import LEAK_RULES
from makd.formats.class_questions import OPTION_LETTERS, PLACEHOLDER, read_class_questions, write_class_questions
from makd.formats.files import sidecar_path
from makd.formats.questions import read_questions, write_questions
from makd.llm.chat_client import JSON_MODES, ChatClient
from makd.llm.class_source import ClassList, read_classes
from makd.llm.openai_client import DEFAULT_BASE_URL, RetryPolicy, resolve_api_key, scrub, server_host
from makd.llm.prompts import MULTIPLE_CHOICE_PROMPTS, PromptSet, load_prompts
from makd.llm.question_pipeline import QuestionsResult, QuestionTask, first_prompts, make_questions
from makd.llm.questions_check import screen_questions_file, write_screening_record
from makd.llm.response_cache import ResponseCache
from makd.llm.screening import read_allow_list

log = logging.getLogger("makd.llm")
PROG = "make_questions"
KIND_NAMES = {"yes-no": "yes_no", "multiple-choice": "multiple_choice"}


class UsageError(MakdError, ValueError):
    """A command-line value is out of range or inconsistent."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Stage 1 of MaKD: ask an LLM for N yes/no aspect questions, keep the Q best."
    )
    parser.add_argument(
        "--kind",
        choices=sorted(KIND_NAMES),
        default="yes-no",
        help="yes-no: the paper's questions about an image (default); multiple-choice: LaViD-style questions "
        "about a class, '<object>' for the class, exactly --options options, one line 'question | opt | ...' "
        "(for make_makd_logits_json.py --level class)",
    )
    parser.add_argument("--options", type=int, default=5, help="options per multiple-choice question (default 5)")
    parser.add_argument(
        "--classes",
        required=True,
        help="text file with one class per line, or a training config (.yaml) whose training "
        "images give the classes and the image count M",
    )
    parser.add_argument(
        "--check",
        metavar="QUESTIONS",
        help="screen this questions file (written by hand) as generated questions are screened: one yes/no sentence "
        "per line, no class name, no near duplicate; the result goes to its sidecar; no LLM is asked",
    )
    parser.add_argument("--n", type=int, default=100, help="candidate questions to generate (paper: N)")
    parser.add_argument("--q", type=int, default=50, help="questions to select (paper: Q = 50)")
    parser.add_argument("--model", help="model name on the server (e.g. gpt-4o); required unless --dry-run")
    parser.add_argument("--out", help="questions file to write, e.g. questions/NAME.txt; required unless --dry-run")
    parser.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        help="OpenAI-compatible API root (default $OPENAI_BASE_URL or %(default)s); the key comes from $OPENAI_API_KEY",
    )
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed sent to the server (where supported)")
    parser.add_argument(
        "--num-images",
        type=int,
        help="M, the number of training images stated in the prompt (default: counted when --classes is a config)",
    )
    parser.add_argument(
        "--prompts",
        help="YAML file replacing prompt templates (keys: generate, select, "
        "generate_more, select_more, select_exact, system)",
    )
    parser.add_argument(
        "--json-mode",
        choices=JSON_MODES,
        default="auto",
        help="ask for JSON output: auto = when the server accepts it (default), on = always, off = never",
    )
    parser.add_argument("--cache", help="folder of replies stored by request hash; a re-run sends no request twice")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument("--dry-run", action="store_true", help="print the exact prompts and exit (no request)")
    parser.add_argument("--allow-class-names", action="store_true", help="keep questions that name a class")
    parser.add_argument(
        "--allow-class-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a class name questions may use in this run (repeatable)",
    )
    parser.add_argument("--allow-list", metavar="FILE", help="file of class names questions may use, one per line")
    parser.add_argument(
        "--class-name-rule",
        choices=LEAK_RULES,
        default="names_object",
        help="names_object: a class name leaks only where it names the object (default); "
        "any_mention: every mention leaks (for adjective classes such as DTD's)",
    )
    parser.add_argument(
        "--max-rounds",
        type=int,
        default=3,
        help="replies per step at most (first request + follow-ups when a reply falls short)",
    )
    parser.add_argument(
        "--retries", type=int, default=5, help="tries per request on timeouts, connection errors, 408/409/429/5xx"
    )
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry (doubles)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise UsageError(f"--n {args.n} must be at least 1")
    if not 1 <= args.q <= args.n:
        raise UsageError(f"--q {args.q} must be between 1 and --n {args.n}")
    if args.num_images is not None and args.num_images < 1:
        raise UsageError(f"--num-images {args.num_images} must be at least 1")
    for name in ("max_rounds", "retries"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} must be at least 1")
    if not 2 <= args.options <= len(OPTION_LETTERS):
        raise UsageError(f"--options {args.options} must be between 2 and {len(OPTION_LETTERS)} (labels A..Z)")
    if args.temperature < 0 or args.backoff < 0 or args.timeout <= 0:
        raise UsageError("--temperature and --backoff must be >= 0 and --timeout > 0")
    if not args.dry_run:
        missing = [flag for flag, value in (("--model", args.model), ("--out", args.out)) if not value]
        if missing:
            raise UsageError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (or use --dry-run)"
            )
        if Path(args.out).exists() and not args.overwrite:
            raise UsageError(f"--out {args.out} already exists; pass --overwrite to replace it")


def _task(args: argparse.Namespace, classes: ClassList, prompts: PromptSet) -> QuestionTask:
    return QuestionTask(
        classes=classes.names,
        num_images=args.num_images if args.num_images is not None else classes.num_images,
        n=args.n,
        q=args.q,
        model=args.model or "",
        temperature=args.temperature,
        seed=args.seed,
        prompts=prompts,
        allow_class_names=args.allow_class_names,
        max_rounds=args.max_rounds,
        allowed_names=(*args.allow_class_name, *(read_allow_list(args.allow_list) if args.allow_list else ())),
        leak_rule=args.class_name_rule,
        kind=KIND_NAMES[args.kind],
        options=args.options,
    )


def _print_dry_run(task: QuestionTask, classes: ClassList) -> None:
    placeholder = f"<the candidates kept from step 1, numbered 1..{task.n} at most>"
    generate, select = first_prompts(task, question_list=placeholder)
    print(f"# classes: {len(task.classes)} from {classes.source}; M = {task.num_images}; N = {task.n}; Q = {task.q}")
    if task.prompts.system.strip():
        print("# system message\n" + task.prompts.system)
    print("# step 1 (generate): user message\n" + generate)
    print("# step 2 (select): the same chat, the screened candidates as the assistant's numbered list, then:")
    print(select)


def _scrubbed(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return scrub(value, secret)
    if isinstance(value, dict):
        return {k: _scrubbed(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, secret) for v in value]
    return value


def sidecar_meta(
    task: QuestionTask, classes: ClassList, result: QuestionsResult, client: ChatClient, json_mode: str
) -> dict[str, Any]:
    """Everything needed to know how the questions were made (the key is never part of it)."""
    served = next((e.served_model for e in result.exchanges if e.served_model), "")
    return {
        "written_by": f"makd {PROG} (LLM-generated)",
        "tool_version": makd.__version__,
        "model": task.model,
        "served_model": served,
        "server_host": client.host,
        "classes": list(task.classes),
        "num_classes": len(task.classes),
        "num_images": task.num_images,
        "class_source": classes.source,
        "N": task.n,
        "Q": task.q,
        "temperature": task.temperature,
        "seed": task.seed,
        "json_mode": {"requested": json_mode, "used": any(e.json_mode for e in result.exchanges)},
        "max_rounds": task.max_rounds,
        "allow_class_names": task.allow_class_names,
        "allowed_class_names": list(task.allowed_names),
        "class_name_rule": task.leak_rule,
        "kind": task.kind,
        "options": task.options if task.multiple_choice else None,
        "placeholder": PLACEHOLDER if task.multiple_choice else None,
        "prompts": task.prompts.as_dict(),
        "exchanges": [dataclasses.asdict(e) for e in result.exchanges],
        "candidates": result.candidates,
        "rejected": [{"question": q, "reason": r} for q, r in result.rejected],
        "requests_sent": client.requests_sent,
        "cache_hits": client.cache_hits,
    }


def check_class_questions(path: str | os.PathLike, task: QuestionTask) -> None:
    """The class-level reader of stage 2 reads the written file as Q questions of exactly M options."""
    questions = read_class_questions(path)
    wrong = [q for q in questions if len(q.options) != task.options]
    if len(questions) != task.q or wrong:
        raise UsageError(f"{path}: read back {len(questions)} questions ({len(wrong)} without {task.options} options)")


def _setup_logging() -> None:
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def check_outputs(args: argparse.Namespace) -> None:
    """Fail before the first (paid) request when an output could not be written later."""
    check_output_location(args.out, "--out")
    check_output_location(sidecar_path(args.out), "the sidecar of --out")
    if args.cache:
        cache = Path(args.cache)
        if cache.exists() and not cache.is_dir():
            raise UsageError(f"--cache {cache} is a file; give a folder for cached replies")
        check_output_location(cache / "0.json", "--cache")


def interrupted_hint(argv: Sequence[str] | None) -> str:
    """What Ctrl-C leaves behind and how to continue (the command line is re-parsed for --cache)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        return "nothing was written"
    if args.cache:
        return (
            f"nothing was written to --out; replies already received are kept in --cache {args.cache}: "
            "rerun the same command with the same --cache to continue without paying for them again"
        )
    return "nothing was written and the replies received are lost; rerun with --cache DIR to keep them next time"


def check_questions_file(args: argparse.Namespace) -> int:
    """--check: screen a hand-written questions file, print every problem, record the result in its sidecar."""
    given = [flag for flag, value in (("--out", args.out), ("--model", args.model), ("--prompts", args.prompts))
             if value] + (["--kind multiple-choice"] if args.kind != "yes-no" else [])  # fmt: skip
    if given:
        raise UsageError(f"--check screens an existing yes/no questions file and asks no LLM; drop {given[0]}")
    classes = read_classes(args.classes)
    allowed = [*args.allow_class_name, *(read_allow_list(args.allow_list) if args.allow_list else ())]
    check = screen_questions_file(args.check, classes.names, allow_class_names=args.allow_class_names,
                                  allowed_names=allowed, leak_rule=args.class_name_rule)  # fmt: skip
    for problem in check.problems:
        # FILE:LINE for an editor; the question's number too where a blank line above makes them differ
        number = problem.get("number")
        named = f"question {number}: " if number not in (None, problem["line"]) else ""
        print(f"{args.check}:{problem['line']}: {named}{problem['reason']}: {problem['question']!r}")
    if not check.questions:
        raise UsageError(f"{args.check}: holds no question (write one yes/no question per line)")
    sidecar = write_screening_record(args.check, check, classes=classes.source, num_classes=len(classes.names),
                                     class_name_rule=args.class_name_rule, allowed_class_names=allowed)  # fmt: skip
    if check.problems:
        raise UsageError(
            f"{args.check}: {len(check.problems)} of {len(check.questions)} lines failed the screening against "
            f"{len(classes.names)} classes (listed above; recorded in {sidecar}); fix them and run --check again"
        )
    print(f"{args.check}: all {len(check.questions)} questions passed the screening against {len(classes.names)} "
          f"classes of {classes.source} (recorded in {sidecar})")  # fmt: skip
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """Stage 1's body: raises MakdError on bad input or a failed LLM run (see `main`)."""
    _setup_logging()
    args = build_parser().parse_args(argv)
    if args.check:
        return check_questions_file(args)
    _check_args(args)
    classes = read_classes(args.classes)
    if args.prompts:
        prompts = load_prompts(args.prompts)
    else:
        prompts = load_prompts(MULTIPLE_CHOICE_PROMPTS) if args.kind == "multiple-choice" else PromptSet()
    task = _task(args, classes, prompts)
    if task.num_images is None and any(prompts.uses(name, "M") for name in prompts.as_dict()):
        raise UsageError(
            "the prompt states the number of training images {M} but it is unknown; pass --num-images M, "
            "or give a training config as --classes so the images are counted"
        )
    first_prompts(task, question_list="")  # fails now, not after paid requests, on a missing {M} etc.
    if args.dry_run:
        _print_dry_run(task, classes)
        return 0
    check_outputs(args)
    key = resolve_api_key(args.base_url, os.environ)
    cache = ResponseCache(args.cache) if args.cache else None
    client = ChatClient(
        args.base_url,
        key,
        timeout=args.timeout,
        cache=cache,
        json_mode=args.json_mode,
        retry=RetryPolicy(attempts=args.retries, backoff=args.backoff),
    )
    log.info(
        "stage 1: %d classes, M=%s, N=%d, Q=%d, model %s at %s",
        len(task.classes),
        task.num_images,
        task.n,
        task.q,
        task.model,
        server_host(args.base_url),
    )
    try:
        result = make_questions(client, task)
        meta = _scrubbed(sidecar_meta(task, classes, result, client, args.json_mode), key)
        if task.multiple_choice:
            write_class_questions(args.out, result.questions, meta)
            check_class_questions(args.out, task)
        else:
            write_questions(args.out, result.questions, meta)
            read_questions(args.out, expected_count=task.q)  # the stage-2 reader accepts it as is
    except MakdError as err:  # a server may echo the key back in an error: never print it
        raise type(err)(scrub(one_line(str(err)), key)) from None
    finally:
        client.transport.close()
    print(
        f"wrote {len(result.questions)} questions to {args.out} (+ .meta.json); {client.requests_sent} requests "
        f"sent, {client.cache_hits} replies from the cache"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run stage 1; 0 on success, 2 on bad input or a failed LLM run (one line on stderr), 130 on Ctrl-C."""
    return run_command(run, argv, interrupted_hint)
