"""tools/gpu_check.py, section stage2: scoring at the real teachers' geometry (docs/gpu.md, "Stage 2 at real scale").

For each geometry (InternVL2.5-1B-like and 8B-like: makd.demo.real_scale_internvl, random weights built straight on
the GPU) and each tile count (1 and 13), with Q = 50 questions of 20-30 tokens, in bfloat16:
- this implementation (InternVLScorer: encode once, prefill the shared prefix once, packed suffixes) over a small
  grid of --batch-size x --images-per-step, in images/s; the best cell is the figure; peak memory per cell;
- the packed attention the start-up check chose ("split": the CUDA log-sum-exp kernel), against the explicit mask;
- the official approach (one full forward per question, the image re-encoded each time) on a few questions of one
  image, scaled to Q; and the bound (encode once + one causal pass over the prefix and all suffixes);
- where the time goes: encode, prefix prefill, suffix batches of one image, and a profiler table of the 8B
  geometry at 13 tiles (gpu_check_profile.txt);
- achieved TFLOP/s (FLOPs counted by real_scale_internvl.scoring_flops) against the matmul rate of this run.
The derived estimate to beat for the 8B geometry on one H100: about 4 images/s at 13 tiles, 10 at 1 tile.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's makd, as every tool

from makd.demo.real_scale_internvl import GEOMETRIES, build_on_device, parameter_count, scoring_flops  # noqa: E402
from makd.demo.tiny_internvl import synthetic_questions, train_tiny_tokenizer  # noqa: E402
from makd.mllm.inprocess_scorer import InternVLScorer  # noqa: E402
from makd.mllm.model_loading import native_parts  # noqa: E402
from makd.mllm.prefix_scoring import merge_image_features, output_cache  # noqa: E402
from makd.mllm.reference import bound_pass, score_per_question  # noqa: E402

QUESTIONS = 50
# 500x375 tiles into 13 (4x3 + thumbnail) at --max-tiles 12, as the official script's default; 448x448 into 1;
# 896x448 into 3 (2x1 + thumbnail: --smoke's many-tile case, a third of the tokens).
IMAGE_FOR_TILES = {1: ((448, 448), 1), 3: ((896, 448), 12), 13: ((500, 375), 12)}
# (--batch-size, --images-per-step) cells; 64 holds all 50 suffixes in one forward.
GRID = {1: [(64, 1), (64, 4), (64, 8), (64, 16)], 13: [(64, 1), (64, 2), (16, 1)]}
SMOKE_GRID = {1: [(64, 1), (64, 2)], 3: [(64, 1)]}
FULL = {"geometries": ["internvl2_5-1b", "internvl2_5-8b"], "tiles": (1, 13), "images": {1: 32, 13: 6},
        "official_questions": 5, "profile": ("internvl2_5-8b", 13)}  # fmt: skip
SMOKE = {"geometries": ["tiny"], "tiles": (1, 3), "images": {1: 2, 3: 1}, "official_questions": 1,
         "profile": ("tiny", 3)}  # fmt: skip
ESTIMATE_8B = {13: 4.0, 1: 10.0}  # images/s on one H100, derived in the issue this check answers


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (rates span 1e-3 on a CPU to 1e3 on a GPU)."""
    return float(f"{value:.{digits}g}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, device: torch.device) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return result, time.perf_counter() - start


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def run(record, device: torch.device, matmul_tflops: float) -> None:
    plan = SMOKE if record.smoke else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    record.set("dtype", str(dtype).replace("torch.", ""))
    record.set("matmul_tflops", matmul_tflops)
    tokenizer = train_tiny_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    for name in plan["geometries"]:
        if not record.fits(10):
            record.skip(f"geometry {name}", 10)
            continue
        model, built = timed(lambda name=name: build_on_device(GEOMETRIES[name], image_id, device, dtype), device)
        parts = native_parts(model, tokenizer)
        record.append("models", {"geometry": name, "parameters": parameter_count(model),
                                 "build_seconds": round(built, 1), "weights_gib": peak_gib(device)})  # fmt: skip
        for tiles in plan["tiles"]:
            if not record.fits(8):
                record.skip(f"{name} at {tiles} tiles", 8)
                continue
            try:
                case = measure_case(record, parts, name, tiles, tokenizer, plan, matmul_tflops)
            except torch.cuda.OutOfMemoryError as err:
                case = {"geometry": name, "tiles": tiles, "error": f"out of memory: {str(err).splitlines()[0][:200]}"}
            record.append("cases", case)
        del parts, model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure_case(record, parts, name: str, tiles: int, tokenizer, plan: dict, matmul_tflops: float) -> dict:
    device = parts.device
    (width, height), max_tiles = IMAGE_FOR_TILES[tiles]
    scorer = InternVLScorer(parts, max_tiles=max_tiles)
    questions = synthetic_questions(tokenizer, QUESTIONS)
    rng = np.random.default_rng(tiles)
    from PIL import Image

    count = plan["images"][tiles]
    images = [scorer.prepare(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
              for _ in range(count)]  # fmt: skip  (uint8 tiles: the loader threads' work is not timed here)
    assert images[0].shape[0] == tiles, images[0].shape
    split = scorer.split(questions, tiles)
    suffixes = [len(s) for s in split.suffixes]
    config = parts.model.config
    flops = {m: scoring_flops(config, tiles, len(split.prefix), suffixes, m) for m in ("this", "official", "bound")}
    case: dict[str, Any] = {
        "geometry": name, "tiles": tiles, "prefix_tokens": len(split.prefix),
        "suffix_tokens": [min(suffixes), max(suffixes)], "questions": len(suffixes),
        "packed_attention": scorer.packed_attention,
        "gflop_per_image": {k: round(v / 1e9, 1) for k, v in flops.items()},
    }  # fmt: skip
    # --batch-size x --images-per-step
    grid = []
    for batch_size, per_step in (SMOKE_GRID if record.smoke else GRID)[tiles]:
        if not record.fits(5):
            record.skip(f"{name} {tiles} tiles, batch {batch_size} x {per_step} images", 5)
            break
        grid.append(time_scorer(scorer, images, questions, batch_size, per_step))
    case["grid"] = grid
    done = [cell for cell in grid if "images_per_s" in cell]
    if not done:
        return case
    best = max(done, key=lambda cell: cell["images_per_s"])
    case["best"] = best
    rate = best["images_per_s"]
    case["tflops_achieved"] = significant(flops["this"] * rate / 1e12)
    case["percent_of_matmul"] = round(100 * flops["this"] * rate / 1e12 / matmul_tflops, 1)
    if scorer.packed_attention == "split" and record.fits(5):  # the CUDA kernel against the explicit mask
        scorer.packed_attention = "mask"
        case["mask_attention"] = time_scorer(scorer, images, questions, best["batch_size"], best["images_per_step"])
        scorer.packed_attention = "split"
    pixels = scorer.pixels(images[0])
    if record.fits(10):  # the official approach, a few questions scaled to Q
        prompts = scorer.prompt_ids(questions, tiles)[: plan["official_questions"]]
        score_per_question(parts, prompts[:1], pixels, scorer.tokens)  # warm-up
        _, seconds = timed(lambda: score_per_question(parts, prompts, pixels, scorer.tokens), device)
        per_image = seconds / len(prompts) * len(questions)
        case["official"] = {"images_per_s": significant(1 / per_image), "questions_timed": len(prompts)}
        case["speedup_vs_official"] = round(rate * per_image, 1)
    if record.fits(5):  # the bound: encode once + one causal pass over everything
        bound_pass(parts, split, pixels, scorer.tokens)
        seconds = min(timed(lambda: bound_pass(parts, split, pixels, scorer.tokens), device)[1] for _ in range(3))
        bound_tflops = significant(flops["bound"] / seconds / 1e12)
        case["bound"] = {"images_per_s": significant(1 / seconds), "tflops": bound_tflops}
        case["percent_of_bound"] = round(100 * rate * seconds, 1)
    if record.fits(5):
        case["phases_seconds"] = phases(scorer, parts, split, images[0], best["batch_size"], questions)
    if (name, tiles) == plan["profile"] and record.fits(10):
        scorer.batch_size, scorer.images_per_forward = best["batch_size"], best["images_per_step"]
        record.set("profile_table", profile(scorer, images[: best["images_per_step"]], questions))
        record.set("profile_case", f"{name}, {tiles} tiles, batch {best['batch_size']} x {best['images_per_step']}")
    if name == "internvl2_5-8b" and tiles in ESTIMATE_8B:
        case["estimate_images_per_s"] = ESTIMATE_8B[tiles]
        case["percent_of_estimate"] = round(100 * rate / ESTIMATE_8B[tiles], 1)
    return case


def time_scorer(scorer: InternVLScorer, images: list, questions: list[str], batch_size: int, per_step: int) -> dict:
    """images/s of `score` over all `images` in calls of `per_step` images (warm-up first), and peak memory."""
    device = scorer.parts.device
    scorer.batch_size, scorer.images_per_forward = batch_size, per_step
    cell: dict[str, Any] = {"batch_size": batch_size, "images_per_step": per_step}
    count = max(per_step, len(images) // per_step * per_step)
    todo = (images * (1 + count // len(images)))[:count]
    try:
        scorer.score(todo[:per_step], questions)  # warm-up at these shapes
        reset_peak(device)
        _, seconds = timed(lambda: [scorer.score(todo[i : i + per_step], questions) for i in range(0, count, per_step)],
                           device)  # fmt: skip
    except torch.cuda.OutOfMemoryError:
        cell["error"] = "out of memory"
        torch.cuda.empty_cache()
        return cell
    cell.update(images=count, images_per_s=significant(count / seconds), peak_gib=peak_gib(device))
    return cell


@torch.inference_mode()
def phases(scorer: InternVLScorer, parts, split, tiles: torch.Tensor, batch_size: int, questions) -> dict:
    """Seconds of one image's encode, prefix prefill and (the rest of `score`) suffix batches."""
    device = parts.device
    pixels = scorer.pixels(tiles)
    features, encode = timed(lambda: parts.encode_images(pixels), device)
    prefix = torch.tensor([split.prefix], dtype=torch.long, device=device)

    def prefill():
        return output_cache(parts.decoder(inputs_embeds=merge_image_features(parts, prefix, features), use_cache=True))

    _, prefill_seconds = timed(prefill, device)
    scorer.batch_size, scorer.images_per_forward = batch_size, 1
    _, total = timed(lambda: scorer.score([tiles], questions), device)
    return {"encode": round(encode, 4), "prefill": round(prefill_seconds, 4),
            "suffixes": round(max(total - encode - prefill_seconds, 0.0), 4), "total": round(total, 4)}  # fmt: skip


def profile(scorer: InternVLScorer, images: list, questions: list[str]) -> str:
    """torch.profiler table of one `score` call, the kernels that took the most device (or CPU) time first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = scorer.parts.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        scorer.score(images, questions)
        synchronize(device)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60)


def markdown(result: dict) -> list[str]:
    cases = result.get("cases") or []
    if not cases:
        return []
    lines = ["", f"## Stage 2 at real scale ({result.get('dtype')}, Q = {QUESTIONS}; matmul "
                 f"{result.get('matmul_tflops')} TFLOP/s)", "",
             "| geometry | tiles | prefix tokens | this img/s | official img/s | bound img/s | % of bound | x official "
             "| TFLOP/s | % of matmul | peak GiB | best batch x images | attention (mask img/s) | % of estimate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cases:
        if "error" in c:
            lines.append(f"| {c['geometry']} | {c['tiles']} | {c['error']} |" + " |" * 11)
            continue
        best = c.get("best", {})
        mask = c.get("mask_attention", {}).get("images_per_s")
        cells = [c["geometry"], c["tiles"], c["prefix_tokens"], best.get("images_per_s", "-"),
                 c.get("official", {}).get("images_per_s", "-"), c.get("bound", {}).get("images_per_s", "-"),
                 c.get("percent_of_bound", "-"), c.get("speedup_vs_official", "-"), c.get("tflops_achieved", "-"),
                 c.get("percent_of_matmul", "-"), best.get("peak_gib", "-"),
                 f"{best.get('batch_size', '-')} x {best.get('images_per_step', '-')}",
                 c["packed_attention"] + (f" ({mask})" if mask else ""),
                 c.get("percent_of_estimate", "-")]  # fmt: skip
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    lines += ["", "| geometry | tiles | encode s | prefill s | suffixes s | total s (1 image) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for c in cases:
        p = c.get("phases_seconds")
        if p:
            cells = [c["geometry"], c["tiles"], p["encode"], p["prefill"], p["suffixes"], p["total"]]
            lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    if result.get("profile_table_file"):
        lines += ["", f"Profiler table ({result.get('profile_case')}): {result['profile_table_file']}."]
    return lines
