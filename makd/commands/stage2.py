"""Command lines of stage 2: `make_makd_logits_json` (extract aspect targets) and `merge_shards`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from makd.errors import run_command
from makd.formats.screening_record import screening_warning
from makd.mllm.backends import add_backend_arguments, backend_names
from makd.mllm.backends import build_scorer as build_backend_scorer
from makd.mllm.box_items import BOX_VIEWS, DEFAULT_MARGIN, DEFAULT_MIN_SIZE, DEFAULT_PROMPTS, CocoBoxItems
from makd.mllm.errors import ExtractionError
from makd.mllm.extraction import (
    Shard,
    empty_shard_note,
    parse_views,
    plan_extraction,
    run_extraction,
    view_output,
)
from makd.mllm.items import ImageFolderItems
from makd.mllm.partial_rows import output_lock, partial_path
from makd.mllm.tiny_teacher import NOTICE, TINY_MODEL, tiny_teacher_path

PROG = "make_makd_logits_json.py"
PAPER_ANSWER_SUFFIX = "The answer must always be either Yes or No (do not provide any other response)."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Ask a multimodal LLM every yes/no question about every image (or, with --boxes, every "
        "ground-truth box); write P(yes) rows {id: [p_1..p_Q]} to an aspect file (+ .meta.json) that stage 3 "
        "trains on.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="model folder or hub id (in-process), served model name (openai), or 'tiny': a tiny random teacher built "
        "once on this machine to try the plumbing offline (its numbers mean nothing)",
    )
    p.add_argument("--questions", required=True, help="questions file, one yes/no question per line")
    p.add_argument("--images", default=None, help="image root; ids = relative paths without extension (image level)")
    p.add_argument("--output", required=True, help="aspect file to write (.json)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=backend_names(),
        help="auto: openai when --base-url is given, else detected from the model's config.json",
    )
    p.add_argument("--revision", default=None, help="hub revision (commit) of the model")
    p.add_argument("--max-tiles", type=int, default=12, help="InternVL dynamic tiling: at most N tiles (1 = off)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="auto = bfloat16 on GPU, float32 on CPU",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--attn-implementation",
        default="auto",
        choices=["auto", "eager", "sdpa", "flash_attention_2"],
        help="remote-code checkpoints: the language model's attention, set by this command whatever the checkpoint's "
        "config says (auto: sdpa where the class has it, else eager; flash_attention_2 needs flash-attn and CUDA "
        "and takes no packed mask, so packed scoring falls back to expanded)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="question prompts per forward over a shared image prefix (default: 64 in packed mode, whose prefix is "
        "never copied; 16 in expanded mode, which copies it per prompt; 32 prompts at --level class)",
    )
    p.add_argument(
        "--prefix-mode",
        default="packed",
        choices=["packed", "expanded"],
        help="packed: question suffixes share one copy of the image prefix's KV cache (least memory); "
        "expanded: the cache is repeated per question (plain batching)",
    )
    p.add_argument(
        "--images-per-step",
        type=int,
        default=None,
        help="images scored and flushed together (default: 1 in-process; openai: enough to keep "
        "--concurrency requests in flight)",
    )
    p.add_argument("--loader-threads", type=int, default=2, help="threads decoding and tiling upcoming images")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads of an in-process model; 0 = auto: the usable cores (affinity, cgroup quota), and on "
        "the CPU the count a short measured check finds fastest now (docs/threads.md)",
    )
    p.add_argument(
        "--views",
        default="identity",
        help="image views to score: 'identity' (default) or 'flip' = also the horizontally flipped image, "
        "written to <output stem>.flip.json (+ sidecar) for trainers that flip images",
    )
    p.add_argument("--resume", action="store_true", help="continue from <output>.partial.jsonl, skipping done ids")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output / partial file")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (of the shard)")
    p.add_argument(
        "--shard",
        default=None,
        help="I/N: the I-th (0-based) of N contiguous slices; 'auto' = torchrun "
        "RANK/WORLD_SIZE, output named <output stem>.shard<I>of<N>.json",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable or unanswered image")
    p.add_argument(
        "--system-prompt",
        default=None,
        help="system message (default: the model's own; openai: none sent, the server template decides)",
    )
    p.add_argument("--answer-suffix", default="", help=f"text appended to every question, e.g. {PAPER_ANSWER_SUFFIX!r}")
    p.add_argument("--paper-suffix", action="store_true", help="shorthand for --answer-suffix with the paper's text")
    p.add_argument("--yes-word", default="Yes", help="answer token read as yes")
    p.add_argument("--no-word", default="No", help="answer token read as no")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    boxes = p.add_argument_group("box level (--boxes: every ground-truth box of a COCO-format set, docs/stage2.md)")
    boxes.add_argument(
        "--boxes",
        default=None,
        metavar="INSTANCES.json",
        help="score every non-crowd box of this COCO instances file (file_names relative to --images); "
        "rows are keyed '<image id>#<annotation id>'",
    )
    boxes.add_argument(
        "--boxes-view",
        default=None,
        choices=list(BOX_VIEWS),
        help="crop (default): the MLLM sees the box cut out with --box-margin; whole: the whole image with the box "
        "outlined in red and the question framed by --box-prompt",
    )
    boxes.add_argument(
        "--box-margin",
        type=float,
        default=None,
        help=f"crop: context added on each side, as a fraction of the box's width / height (default {DEFAULT_MARGIN})",
    )
    boxes.add_argument(
        "--min-box-size",
        type=float,
        default=None,
        help=f"boxes with a shorter side under this many px are skipped and listed in the sidecar "
        f"(default {DEFAULT_MIN_SIZE}; both views)",
    )
    boxes.add_argument(
        "--box-prompt",
        default=None,
        help="text sent per question, holding {question} once (default: crop '{question}'; whole "
        f"{DEFAULT_PROMPTS['whole']!r})",
    )
    level = p.add_argument_group("class level (--level class: a text-only LLM answers about class names)")
    level.add_argument(
        "--level",
        default="image",
        choices=["image", "class"],
        help="image: an MLLM answers per image (default); class: a text-only causal LM answers per class name, "
        "writing {class: [p_1..p_Q]} or {class: [[p_q1..p_qM], ...]} (docs/class_level.md)",
    )
    level.add_argument("--classes", default=None, help="class names: a text file (one per line) or a training config")
    level.add_argument(
        "--option-labels",
        default="letters",
        choices=["letters", "digits"],
        help="multiple choice: options labelled A, B, ... (default) or 1, 2, ... (LaViD's choice, at most 9); "
        "the answer is read from those label tokens",
    )
    level.add_argument(
        "--class-template",
        action="append",
        default=None,
        help="text holding {question} (and {class} unless every question has <object>); repeat it for "
        "paraphrases, averaged in probability space (default: 'Consider a photo of a {class}. {question}')",
    )
    add_backend_arguments(p)  # each backend's own options (the server's: --base-url, --concurrency, ...)
    return p


def _shard_and_output(args: argparse.Namespace) -> tuple[Shard | None, Path]:
    output = Path(args.output)
    if args.shard is None:
        return None, output
    if args.shard != "auto":
        return Shard.parse(args.shard), output
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ExtractionError("--shard auto needs RANK and WORLD_SIZE (start with torchrun) or use --shard I/N")
    shard = Shard.parse(f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}", "--shard auto: RANK/WORLD_SIZE")
    if args.device == "auto" and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    return shard, output.with_name(f"{output.stem}.shard{shard.index}of{shard.count}{output.suffix}")


BOX_OPTIONS = ("boxes_view", "box_margin", "min_box_size", "box_prompt")


def build_item_source(args: argparse.Namespace):
    """The items the arguments ask to score: the images of --images, or the boxes of --boxes."""
    if args.boxes is None:
        given = [f"--{name.replace('_', '-')}" for name in BOX_OPTIONS if getattr(args, name) is not None]
        if given:
            raise ExtractionError(f"{given[0]} is a box-level option; pass --boxes INSTANCES.json too")
        return ImageFolderItems(args.images)
    return CocoBoxItems(
        args.boxes,
        args.images,
        view=args.boxes_view or "crop",
        margin=DEFAULT_MARGIN if args.box_margin is None else args.box_margin,
        min_size=DEFAULT_MIN_SIZE if args.min_box_size is None else args.min_box_size,
        prompt=args.box_prompt,
    )


def build_scorer(args: argparse.Namespace):
    """The scorer the arguments ask for (loads the model for in-process backends)."""
    suffix = args.answer_suffix or (PAPER_ANSWER_SUFFIX if args.paper_suffix else "")
    backend = args.backend
    if backend == "auto" and args.base_url:
        backend = "openai"
    return build_backend_scorer(args, backend, suffix)


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def resolve_tiny_model(args: argparse.Namespace) -> bool:
    """--model tiny: the cached tiny teacher of the level (built on first use) in place of the name; True if so."""
    if args.model != TINY_MODEL:
        return False
    if Path(TINY_MODEL).exists():
        raise ExtractionError(
            f"--model {TINY_MODEL} names the built-in tiny teacher, but ./{TINY_MODEL} exists here too; "
            f"pass ./{TINY_MODEL} for that folder, or run from another folder"
        )
    if args.base_url or args.backend not in ("auto", "hf"):
        raise ExtractionError("--model tiny runs in this process with transformers' own classes; "
                              "drop --base-url and --backend")  # fmt: skip
    print(f"warning: {NOTICE}", file=sys.stderr)
    args.model = str(tiny_teacher_path(args.level))
    return True


def set_threads(args: argparse.Namespace) -> None:
    """torch's CPU threads for a model run in this process (makd.data.cpu_threads); a server backend runs none."""
    if args.base_url or args.backend == "openai":
        return
    if args.threads < 0:
        raise ExtractionError(f"--threads {args.threads}: must be >= 0 (0 = auto)")
    from makd.data import cpu_threads
    from makd.mllm.model_loading import resolve_device

    choice = cpu_threads.choose_threads(args.threads, resolve_device(args.device).type)
    cpu_threads.apply(choice)
    if choice.source == "measured":  # a choice the user did not make: say what it was and how to fix it
        print(f"threads: {choice.line('--threads')}", file=sys.stderr)
    if choice.warning:
        print(f"warning: {choice.warning}", file=sys.stderr)


def interrupted_hint(argv: Sequence[str] | None) -> str:
    """What Ctrl-C leaves behind and how to continue."""
    try:
        args = build_parser().parse_args(argv)
        _, output = _shard_and_output(args)
    except (SystemExit, ExtractionError):
        return "rerun the same command to continue"
    if not partial_path(output).exists():  # interrupted before the first row (e.g. while the model loaded)
        return "no row was written yet; rerun the same command to start again"
    again = "rerun the same command" if args.resume else "rerun the same command with --resume"
    return f"finished rows are kept in {partial_path(output)}; {again} to continue from there"


def attach_dash_values(argv: Sequence[str], options: Sequence[str]) -> list[str]:
    """`--shard -1/2` as `--shard=-1/2`: argparse takes a value starting with "-" that is not a plain negative number
    for an option and stops with its usage text; attached, the value reaches the option's own one-line check."""
    out: list[str] = []
    values = iter(argv)
    for arg in values:
        following = next(values, None) if arg in options else None
        if following is not None and following.startswith("-") and following[1:2].isdigit():
            out.append(f"{arg}={following}")
        else:
            out += [arg] if following is None else [arg, following]
    return out


def run(argv: Sequence[str] | None = None) -> int:
    """Extract aspect targets; raises MakdError on bad input or a failed run (see `main`)."""
    argv = attach_dash_values(sys.argv[1:] if argv is None else argv, ("--shard",))
    args = build_parser().parse_args(argv)
    if args.level == "class":
        return _run_class_level(args)
    if args.images is None:
        if args.boxes is not None:
            raise ExtractionError("--boxes needs --images, the folder its file_names are relative to")
        raise ExtractionError("--images is required at image level (or pass --level class --classes FILE)")
    shard, output = _shard_and_output(args)
    with output_lock(output):  # one writer per output (and its views' and partial files)
        return _run_image_level(args, shard, output)


def _run_image_level(args: argparse.Namespace, shard: Shard | None, output: Path) -> int:
    scorer = None
    try:
        if args.max_tiles < 1:
            raise ExtractionError(f"--max-tiles {args.max_tiles}: must be >= 1 (1 turns tiling off)")
        if args.images_per_step is not None and args.images_per_step < 1:
            raise ExtractionError(f"--images-per-step {args.images_per_step}: must be >= 1")
        views = parse_views(args.views)
        # Every input and output location is checked before the (slow) model load.
        source = build_item_source(args)
        plan = plan_extraction(args.questions, source, output, shard, args.limit, args.resume, args.overwrite,
                               args.strict, views)  # fmt: skip
        if not plan.items:  # more shards than items: this one has nothing to do, and a job array must finish
            print(f"note: {empty_shard_note(plan)}", file=sys.stderr)
            return 0
        unscreened = screening_warning(plan.questions_path)
        if unscreened:
            print(f"warning: {unscreened}", file=sys.stderr)
        if getattr(source, "small", None):
            print(f"skipping {len(source.small)} of {len(source.small) + len(source.items)} boxes under "
                  f"{source.min_size:g} px on the shorter side (listed in the sidecar: boxes.small_boxes_skipped)",
                  file=sys.stderr)  # fmt: skip
        _quiet_transformers()
        tiny = resolve_tiny_model(args)
        set_threads(args)
        scorer = build_scorer(args)
        per_step = args.images_per_step
        if per_step is None:  # a server needs several images' requests queued to stay busy
            server = getattr(scorer, "concurrency", 0)
            per_step = max(1, -(-2 * server // len(plan.questions))) if server else 1
        meta = run_extraction(plan, scorer, per_step, args.loader_threads, not args.no_progress)
    finally:
        if scorer is not None and hasattr(scorer, "close"):
            scorer.close()
    rate = meta.get("images_per_second_this_run")
    written = ", ".join(str(p) for p in [output, *(view_output(output, v) for v in plan.views[1:])])
    scored, nouns = meta["num_images_planned"] - len(meta["skipped_images"]), source.nouns
    print(f"wrote {written} ({scored} {nouns} x {meta['num_questions']} questions"
          f"{f', {rate} {nouns}/s' if rate else ''})", file=sys.stderr)  # fmt: skip
    if tiny:
        print(f"warning: {NOTICE}", file=sys.stderr)
    return 0


def _run_class_level(args: argparse.Namespace) -> int:
    from makd.mllm.class_level import run_class_level

    if args.classes is None:
        raise ExtractionError("--level class needs --classes (a file with one class name per line, or a config)")
    if args.shard is not None or args.views != "identity" or args.boxes is not None:
        raise ExtractionError(
            "--shard, --views and --boxes are image-level options; class level scores C x Q prompts only"
        )
    _quiet_transformers()
    tiny = resolve_tiny_model(args)
    set_threads(args)
    with output_lock(args.output):
        run_class_level(args, args.answer_suffix or (PAPER_ANSWER_SUFFIX if args.paper_suffix else ""))
    if tiny:
        print(f"warning: {NOTICE}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Extract aspect targets; 0 on success, 2 on a user error (one line on stderr), 130 on Ctrl-C."""
    return run_command(run, argv, interrupted_hint)


def merge_main(argv: Sequence[str] | None = None) -> int:
    """Merge shard aspect files; 0 on success, 2 on a user error (one line on stderr)."""
    from makd.mllm.merge import merge_shards

    p = argparse.ArgumentParser(
        prog="merge_shards.py",
        description="Join --shard I/N aspect files, checking that together they cover every image exactly once.",
    )
    p.add_argument("shards", nargs="+", help="the shard aspect files (each with its .meta.json)")
    p.add_argument("--output", required=True, help="merged aspect file (.json)")
    p.add_argument("--images", default=None, help="image root, to check that every image is covered")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    def body(argv: Sequence[str] | None) -> int:
        args = p.parse_args(argv)
        with output_lock(args.output):
            meta = merge_shards(args.shards, args.output, args.images, args.overwrite)
        print(f"wrote {args.output} ({len(meta['merged_from'])} shards)", file=sys.stderr)
        return 0

    return run_command(body, argv, "nothing was written (the merged file is written at the end, atomically)")
