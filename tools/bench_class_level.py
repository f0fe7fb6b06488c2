"""Benchmark stage 2 at class level: one forward per (class, question) prompt vs the batched scorer.

Builds a tiny random Qwen2-style causal LM with a chat template (makd.demo.tiny_causal_lm), loads it back
through the command's loader, and scores C classes x Q yes/no questions (20-30 tokens each, `<object>` filled
with the class name) two ways:
  (i)  one unpadded forward per prompt (apply_chat_template(tokenize=True), full logits), as a loop over prompts;
  (ii) this implementation: prompts sorted by length, left-padded into batches, last position only.
Prints both wall times, prompts per second, their ratio and max |dP| between them. Example:
  python tools/bench_class_level.py --classes 37 --questions 50 --batch-size 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from makd.demo.tiny_causal_lm import build_tiny_causal_lm  # noqa: E402
from makd.demo.tiny_internvl import synthetic_questions  # noqa: E402
from makd.formats.class_questions import ClassQuestion  # noqa: E402
from makd.mllm.class_level import CausalLMScorer, load_causal_lm  # noqa: E402
from makd.mllm.class_prompts import class_query  # noqa: E402


def one_forward_per_prompt(model, tokenizer, queries: list[str], yes_id: int, no_id: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for query in queries:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": query}], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            logits = model(torch.tensor([list(ids)])).logits[0, -1].double()
            out.append(torch.softmax(logits[[yes_id, no_id]], -1)[0].item())
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=37)
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=256, help="hidden size of the tiny LM")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        build_tiny_causal_lm(folder, width=args.width, layers=args.layers)
        model, tokenizer, info = load_causal_lm(folder, "hf", "cpu", "float32", None)
        scorer = CausalLMScorer(model, tokenizer, args.batch_size, None, info)
        texts = synthetic_questions(tokenizer, args.questions, seed=1)
        questions = [ClassQuestion(t.replace(" the ", " the <object> ", 1)) for t in texts]
        classes = [f"class {i} of the set" for i in range(args.classes)]
        queries = [class_query(q, c, "{question}") for c in classes for q in questions]
        yes_id, no_id = scorer.token_id("Yes"), scorer.token_id("No")
        start = time.perf_counter()
        slow = one_forward_per_prompt(model, tokenizer, queries, yes_id, no_id)
        slow_s = time.perf_counter() - start
        start = time.perf_counter()
        fast = np.array([d[0] for d in scorer.distributions(queries, [("Yes", "No")] * len(queries))])
        fast_s = time.perf_counter() - start
    n = len(queries)
    print(f"{args.classes} classes x {args.questions} questions = {n} prompts, tiny Qwen2 width {args.width} x "
          f"{args.layers} layers, float32 CPU, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"one forward per prompt: {slow_s:.2f} s ({n / slow_s:.1f} prompts/s)")
    print(f"batched (batch {args.batch_size}): {fast_s:.2f} s ({n / fast_s:.1f} prompts/s)")
    print(f"speed-up {slow_s / fast_s:.1f}x, max |dP| {np.abs(slow - fast).max():.2e}, "
          f"tokens processed {scorer.cost.tokens_processed} for {scorer.cost.prompt_tokens} prompt tokens")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
