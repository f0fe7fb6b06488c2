"""Benchmark stage 2: the official approach (one full pass per question) vs the shared-prefix scorer.

Builds a tiny random InternVL with realistic token geometry (256 image tokens per tile, 448-px tiles,
Q questions of 20-30 tokens), saves it and loads it back through the command's loader, then times per image
  (i)  official: for every question, re-encode the image and run the whole prompt (optionally with greedy
       generation of N tokens, as model.chat does), reading the last position's Yes/No logits;
  (ii) this implementation: encode once, prefill the shared prefix once, batch the question suffixes;
  (iii) its limit: one image encode + one plain causal forward over the prefix and all Q suffixes laid end to
       end (the work any exact method must do; its answers are not the right ones, only its time counts);
  (iv) across images, at 1 tile: --batch-images images scored in one call (same-tile images share forwards)
       vs one image per call.
Prints the device, every time (wall and process CPU time; the fast paths are timed between blocks of official
passes, median reported),
the ratios and max |dP|. On a shared machine wall time is noisy; CPU time (all threads of this process) is the
steadier figure and the ratios are given for both. Example:
  python tools/bench_extract.py --tiles 13 --questions 50
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from makd.demo.tiny_internvl import TinySpec, build_tiny_checkpoint, synthetic_questions  # noqa: E402
from makd.mllm.inprocess_scorer import DEFAULT_BATCH_SIZE, InternVLScorer  # noqa: E402
from makd.mllm.model_loading import InternVLParts, load_internvl  # noqa: E402
from makd.mllm.reference import bound_pass, score_per_question  # noqa: E402
from makd.mllm.tiling import closest_grid  # noqa: E402

# Image sizes that tile into the asked number of tiles with --max-tiles 12 (grid + thumbnail).
SIZE_FOR_TILES = {1: (448, 448), 3: (896, 448), 4: (300, 900), 7: (672, 448), 10: (1000, 1000), 13: (500, 375)}


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) = logit_yes - logit_no, which shows differences that P near 0 or 1 hides."""
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


class Timer:
    """Wall time and this process's CPU time (all threads) of a block; CPU time is steadier on a shared machine."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    import platform

    return f"{device} ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=13, choices=sorted(SIZE_FOR_TILES), help="tiles per image")
    p.add_argument("--questions", type=int, default=50, help="Q")
    p.add_argument("--images", type=int, default=1, help="images timed")
    p.add_argument("--kind", default="hf", choices=["hf", "remote"], help="native or remote-code stand-in")
    p.add_argument("--generate-tokens", type=int, default=0,
                   help="official path: greedy tokens generated per question (0 = one pass)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="question suffixes per forward (default: the command's, per prefix mode)")
    p.add_argument("--batch-images", type=int, default=8,
                   help="images per call in the across-images case at 1 tile (0 = skip that case)")
    p.add_argument("--repeats", type=int, default=3, help="across-images case: timings repeated; the median is "
                   "reported (the machine may be shared)")
    p.add_argument("--official-block", type=int, default=10,
                   help="official passes between two timings of each fast path (interleaving; median reported)")
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--vision-width", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0 = torch's default). 1 by default: on a shared machine, threads that "
                   "wait for a descheduled peer make multi-thread timings erratic")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    spec = TinySpec(tokens_per_tile=256, vision_width=args.vision_width, text_width=args.text_width,
                    text_layers=args.text_layers, text_heads=4, text_kv_heads=2)
    with tempfile.TemporaryDirectory(prefix="makd_bench_") as tmp:
        path = build_tiny_checkpoint(Path(tmp) / "model", args.kind, spec)
        parts = load_internvl(str(path), device=args.device, dtype=args.dtype)
    max_tiles = 1 if args.tiles == 1 else 12
    scorer = InternVLScorer(parts, max_tiles=max_tiles, batch_size=args.batch_size)
    questions = synthetic_questions(parts.tokenizer, args.questions)
    size = SIZE_FOR_TILES[args.tiles]
    rng = np.random.default_rng(0)
    from PIL import Image

    images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(args.images)]
    # Normalised float tiles for both paths: preprocessing runs in loader threads and is not timed here.
    pixels = [scorer.pixels(scorer.prepare(image)) for image in images]
    n_tiles = int(pixels[0].shape[0])
    assert n_tiles == args.tiles, (n_tiles, closest_grid(*size, max_tiles))
    prompts = scorer.prompt_ids(questions, n_tiles)
    split = scorer.split(questions, n_tiles)
    lengths = [len(q) for q in (parts.tokenizer(q, add_special_tokens=False)["input_ids"] for q in questions)]
    print(f"device: {describe_device(parts.device)}")
    print(f"model: tiny {args.kind} InternVL, text {args.text_layers}x{args.text_width}, vision 1x{args.vision_width}, "
          f"{args.dtype} on {args.device}, {torch.get_num_threads()} threads; packed attention: "
          f"{scorer.packed_attention}")
    print(f"geometry: {n_tiles} tiles x {parts.tokens_per_tile} image tokens, prompt {len(prompts[0])} tokens "
          f"(shared prefix {len(split.prefix)}), Q = {len(questions)} questions of "
          f"{min(lengths)}-{max(lengths)} tokens, {len(images)} image(s)")

    # Interleaved: the official passes run in blocks of --official-block questions, and before every block each
    # fast path is timed once on the same image, so load changes on a shared machine hit both sides alike.
    samples: dict[str, list[tuple[float, float]]] = {"packed": [], "expanded": [], "limit": []}
    outputs: dict[str, list[np.ndarray]] = {"packed": [], "expanded": []}
    batch_sizes = {mode: args.batch_size or DEFAULT_BATCH_SIZE[mode] for mode in ("packed", "expanded")}

    def use(mode: str) -> None:
        scorer.prefix_mode, scorer.batch_size = mode, batch_sizes[mode]

    for mode in ("packed", "expanded"):  # warm-up
        use(mode)
        scorer.score(pixels[:1], questions[:2])
    slow_rows, slow_wall, slow_cpu = [], 0.0, 0.0
    for p in pixels:
        row = []
        for start in range(0, len(prompts), max(1, args.official_block)):
            for mode in ("packed", "expanded"):
                use(mode)
                with Timer() as timer:
                    fast = scorer.score([p], questions)[0]
                samples[mode].append((timer.wall, timer.cpu))
                if start == 0:
                    outputs[mode].append(fast)
            with Timer() as timer:
                bound_pass(parts, split, p, scorer.tokens)
            samples["limit"].append((timer.wall, timer.cpu))
            block = prompts[start : start + max(1, args.official_block)]
            with Timer() as timer:
                row.append(score_per_question(parts, block, p, scorer.tokens, args.generate_tokens).numpy())
            slow_wall, slow_cpu = slow_wall + timer.wall, slow_cpu + timer.cpu
        slow_rows.append(np.concatenate(row))
    slow = np.stack(slow_rows)
    slow_wall, slow_cpu = slow_wall / len(images), slow_cpu / len(images)
    results = {}
    for mode in ("packed", "expanded"):
        wall, cpu = np.median(np.asarray(samples[mode]), axis=0)
        results[mode] = (np.stack(outputs[mode]), float(wall), float(cpu))
    limit = (None, *(float(x) for x in np.median(np.asarray(samples["limit"]), axis=0)))

    greedy = f", greedy {args.generate_tokens} tokens" if args.generate_tokens else ""
    print(f"(i)   official, full pass per question{greedy}: {slow_wall:8.3f} s/image wall, {slow_cpu:8.3f} s CPU")
    for mode, (fast, wall, cpu) in results.items():
        print(f"(ii)  shared prefix, {mode:8s} (batch {batch_sizes[mode]}): {wall:8.3f} s/image wall, {cpu:8.3f} s CPU"
              f"   speed-up {slow_wall / wall:5.1f}x wall, {slow_cpu / cpu:5.1f}x CPU   "
              f"max |dP| {np.abs(fast - slow).max():.2e}, max |d logit| {np.abs(logit(fast) - logit(slow)).max():.2e}")
    _, limit_wall, limit_cpu = limit
    fast, wall, cpu = results["packed"]
    print(f"(iii) limit, encode + one causal pass over prefix + all suffixes: {limit_wall:8.3f} s/image wall, "
          f"{limit_cpu:8.3f} s CPU   = {slow_wall / limit_wall:5.1f}x / {slow_cpu / limit_cpu:5.1f}x the official")
    print(f"packed vs official {slow_cpu / cpu:.1f}x CPU ({slow_wall / wall:.1f}x wall); at "
          f"{100 * limit_cpu / cpu:.0f} % of its limit CPU ({100 * limit_wall / wall:.0f} % wall); "
          f"max |dP| {np.abs(fast - slow).max():.2e}")
    print(f"P(yes) range over the image(s): {fast.min():.3f}..{fast.max():.3f}")
    if args.batch_images > 0:
        across_images(parts, questions, args)
    if args.device.startswith("cuda"):
        print_gpu_utilisation()
    return 0


def median_time(run, repeats: int, n_images: int) -> tuple[Any, float, float]:
    """(last result, median wall s/image, median CPU s/image) over `repeats` runs of `run()`."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        with Timer() as timer:
            result = run()
        times.append((timer.wall / n_images, timer.cpu / n_images))
    wall, cpu = np.median(np.asarray(times), axis=0)
    return result, float(wall), float(cpu)


def across_images(parts: InternVLParts, questions: list[str], args) -> None:
    """(iv) at 1 tile: --batch-images images in one `score` call vs one image per call (same scorer, same pixels)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    scorer = InternVLScorer(parts, max_tiles=1, batch_size=args.batch_size, images_per_forward=args.batch_images)
    images = [Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)) for _ in range(args.batch_images)]
    tiles = [scorer.prepare(image) for image in images]
    scorer.score(tiles[:2], questions[:2])  # warm-up
    batched, single = [], []
    for _ in range(max(1, args.repeats)):  # alternating, so load changes hit both alike
        together, wall, cpu = median_time(lambda: scorer.score(tiles, questions), 1, len(tiles))
        batched.append((wall, cpu))
        alone, wall, cpu = median_time(lambda: np.concatenate([scorer.score([t], questions) for t in tiles]), 1,
                                       len(tiles))  # fmt: skip
        single.append((wall, cpu))
    (wall_b, cpu_b), (wall_1, cpu_1) = (np.median(np.asarray(rows), axis=0) for rows in (batched, single))
    print(f"(iv)  1 tile, {len(tiles)} images per call: {wall_b:8.4f} s/image wall, {cpu_b:8.4f} s CPU; one image per "
          f"call: {wall_1:8.4f} s/image wall, {cpu_1:8.4f} s CPU   across images {cpu_1 / cpu_b:.2f}x CPU "
          f"({wall_1 / wall_b:.2f}x wall), max |dP| {np.abs(together - alone).max():.2e}")


def print_gpu_utilisation() -> None:
    """GPU utilisation as NVML reports it now (needs pynvml; skipped without it)."""
    try:
        print(f"GPU utilisation (NVML, now): {torch.cuda.utilization()} %")
    except Exception as err:  # noqa: BLE001 - informational only
        print(f"GPU utilisation unavailable ({type(err).__name__}: install pynvml)")


if __name__ == "__main__":
    sys.exit(main())
