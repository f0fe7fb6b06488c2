"""`aspects inspect`: what an aspect file holds, and what is wrong with it, in one pass.

Reported: rows and distinct keys, duplicate keys (same or conflicting values), value shapes (Q, or
Q x M for multiple-choice blocks), NaN / inf / out-of-range values, a histogram of the values,
quantisation (logit(p) on a 1/2^k grid, as bf16 logits give; probabilities that are exact bf16 /
fp16 numbers), and per question the mean P(yes), the yes-rate (share of rows with p > 0.5) and the
entropy of the thresholded answer in bits (0 = the question says the same for every row).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from makd.formats.coco import is_box_id
from makd.formats.image_ids import IMAGE_EXTENSIONS
from makd.formats.tolerant_reader import MAX_LISTED, RawAspectFile, flatten_values, value_problems, value_shape

LOGIT_GRID_STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)
GRID_SHARE = 0.99  # a grid is reported when at least this share of the values' logits sit on it
CONSTANT_ENTROPY_BITS = 0.05  # below this the thresholded answer is (almost) the same for every row


@dataclass
class Inspection:
    """The numbers of `inspect`; `as_dict()` is what --json prints, `lines()` the text report."""

    report: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.report

    def lines(self) -> list[str]:
        r = self.report
        out = [f"{r['path']} ({r['format']}, sha256 {r['sha256'][:12]}..)"]
        out.append(f"rows: {r['rows']} pairs, {r['distinct_keys']} distinct keys; kind: {r['kind']}")
        keys = r["keys"]
        boxes = f", {keys['box_ids']} box ids (<image id>#<annotation id>)" if keys.get("box_ids") else ""
        out.append(
            f"keys: {keys['with_image_extension']} with an image extension, {keys['with_folder']} with a folder "
            f"prefix{boxes}; e.g. {', '.join(repr(k) for k in keys['examples']) or '(none)'}"
        )
        dup = r["duplicates"]
        if dup["keys"]:
            out.append(
                f"duplicates: {dup['keys']} keys appear more than once ({dup['identical']} with identical values, "
                f"{dup['conflicting']} conflicting); e.g. {', '.join(repr(k) for k in dup['examples'])}"
            )
        else:
            out.append("duplicates: none")
        out.append(f"shapes: {', '.join(f'{s} x{n}' for s, n in r['shapes'].items())}")
        bad = r["problems"]
        if bad["count"]:
            out.append(f"problems: {bad['count']} ({'; '.join(bad['examples'])})")
        else:
            out.append("problems: none (every value is a finite number in [0, 1])")
        values = r.get("values")
        if values:
            out.append(
                f"values: {values['count']} numbers, {values['distinct']} distinct, min {values['min']:.4g}, "
                f"max {values['max']:.4g}, mean {values['mean']:.4f}"
            )
            out.append("histogram [0,0.1) .. [0.9,1]: " + " ".join(str(c) for c in values["histogram"]))
            quant = values["quantisation"]
            grid = quant["logit_grid"]
            out.append(
                "quantisation: "
                + (
                    f"logit(p) on a 1/{round(1 / grid['step'])} grid for {grid['share']:.2%} of values in (0, 1)"
                    if grid["step"]
                    else "logit(p) on no 1/2^k grid"
                )
                + f"; exact bf16 numbers {quant['bf16_share']:.2%}, exact fp16 numbers {quant['fp16_share']:.2%}"
            )
        blocks = r.get("multiple_choice_questions")
        if blocks:
            out.append("question  options  mean_row_sum  mean_entropy_bits  top_option_share")
            for q in blocks:
                out.append(
                    f"{q['number']:>8}  {q['options']:>7}  {q['mean_row_sum']:.4f}  {q['mean_entropy_bits']:.4f}  "
                    f"{q['top_option_share']:.4f}"
                )
            same = sum(q["top_option_share"] == 1.0 for q in blocks)
            out.append(f"{same} of {len(blocks)} questions have the same top option in every row")
        questions = r.get("questions")
        if questions:
            out.append("question  mean_p  yes_rate  entropy_bits")
            for q in questions:
                flag = "  (constant answer)" if q["entropy_bits"] < CONSTANT_ENTROPY_BITS else ""
                out.append(f"{q['number']:>8}  {q['mean_p']:.4f}  {q['yes_rate']:.4f}  {q['entropy_bits']:.4f}{flag}")
            constant = sum(q["entropy_bits"] < CONSTANT_ENTROPY_BITS for q in questions)
            out.append(f"{constant} of {len(questions)} questions give (almost) the same answer for every row")
        return out


def binary_entropy_bits(rate: float) -> float:
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return float(-(rate * math.log2(rate) + (1 - rate) * math.log2(1 - rate)))


def logit_grid(values: np.ndarray) -> dict[str, float]:
    """The coarsest 1/2^k step that at least GRID_SHARE of logit(values) sit on (values in (0, 1) only).

    bf16 logits have 8 significant bits, so for |logit| in [1, 2) they are multiples of 1/128, and a
    softmax over two of them gives p = sigmoid(l_yes - l_no) with the difference on a coarse grid
    (LaViD's InternVL2 files: 1/8). A grid says the targets carry fewer distinct levels than floats suggest.
    """
    inside = values[(values > 0.0) & (values < 1.0)].astype(np.float64)
    if inside.size == 0:
        return {"step": 0.0, "share": 0.0}
    logits = np.log(inside) - np.log1p(-inside)
    for step in LOGIT_GRID_STEPS:
        scaled = logits / step
        # float32 probabilities carry ~1e-7 relative error: allow that much, scaled by the logit's slope.
        tolerance = 2e-6 / (inside * (1 - inside)) / step + 1e-6
        share = float(np.mean(np.abs(scaled - np.round(scaled)) <= tolerance))
        if share >= GRID_SHARE:
            return {"step": step, "share": share}
    return {"step": 0.0, "share": 0.0}


def exact_share(values: np.ndarray, dtype: str) -> float:
    """Share of `values` that are exactly representable in bf16 or fp16 (after float32 rounding)."""
    as32 = values.astype(np.float32)
    if dtype == "bf16":
        return float(np.mean((as32.view(np.uint32) & 0xFFFF) == 0))
    return float(np.mean(as32.astype(np.float16).astype(np.float32) == as32))


def inspect_file(raw: RawAspectFile) -> Inspection:
    """Summarise `raw` (from reading.read_raw); never raises on bad content, it is reported instead."""
    by_key: dict[str, list[Any]] = {}
    for key, value in raw.pairs:
        by_key.setdefault(key, []).append(value)
    duplicates = {k: v for k, v in by_key.items() if len(v) > 1}
    identical = sum(all(x == v[0] for x in v) for v in duplicates.values())
    problems = list(raw.problems)
    shapes: Counter = Counter()
    good_rows: list[list[float]] = []
    good_shape = None
    for key, value in raw.pairs:
        shape = value_shape(value)
        shapes["bad" if isinstance(shape, str) else _shape_name(shape)] += 1
        issues = value_problems(key, value)
        problems.extend(issues)
        if issues or isinstance(shape, str):
            continue
        if good_shape is None:
            good_shape = shape
        if shape == good_shape:
            good_rows.append(flatten_values(value))
    if len(shapes) > 1:
        problems.append(f"rows have different shapes: {', '.join(shapes)}")
    if not raw.pairs:
        problems.append("the file holds no rows")
    keys = list(by_key)
    report: dict[str, Any] = {
        "path": raw.path,
        "format": raw.format,
        "sha256": raw.sha256,
        "rows": len(raw.pairs),
        "distinct_keys": len(keys),
        "kind": _kind(good_shape),
        "keys": {
            "with_image_extension": sum(_has_image_extension(k) for k in keys),
            "with_folder": sum("/" in k or "\\" in k for k in keys),
            "box_ids": sum(is_box_id(k) for k in keys),  # stage 2 per box: "<image id>#<annotation id>"
            "examples": keys[:3],
        },
        "duplicates": {
            "keys": len(duplicates),
            "identical": identical,
            "conflicting": len(duplicates) - identical,
            "examples": list(duplicates)[:MAX_LISTED],
        },
        "shapes": dict(shapes),
        "problems": {"count": len(problems), "examples": problems[:MAX_LISTED]},
    }
    if good_rows:
        matrix = np.asarray(good_rows, dtype=np.float64)  # [rows, Q] (multiple choice: [rows, sum of M])
        flat = matrix.ravel()
        report["values"] = {
            "count": int(flat.size),
            "distinct": int(np.unique(flat).size),
            "min": float(flat.min()),
            "max": float(flat.max()),
            "mean": float(flat.mean()),
            "histogram": np.histogram(flat, bins=10, range=(0.0, 1.0))[0].astype(int).tolist(),
            "quantisation": {
                "logit_grid": logit_grid(flat),
                "bf16_share": exact_share(flat, "bf16"),
                "fp16_share": exact_share(flat, "fp16"),
            },
        }
        if len(good_shape) == 1:
            yes = matrix > 0.5
            report["questions"] = [
                {
                    "number": q + 1,  # counted from 1, as the questions file
                    "mean_p": float(matrix[:, q].mean()),
                    "yes_rate": float(yes[:, q].mean()),
                    "entropy_bits": binary_entropy_bits(float(yes[:, q].mean())),
                }
                for q in range(matrix.shape[1])
            ]
        else:
            report["options_per_question"] = list(good_shape[1:])
            report["multiple_choice_questions"] = multiple_choice_stats(matrix, list(good_shape[1:]))
    return Inspection(report)


def multiple_choice_stats(matrix: np.ndarray, options: list[int]) -> list[dict[str, float]]:
    """Per question of flattened blocks [rows, sum(options)]: mean row sum (1 for a distribution), mean
    entropy of the option distribution in bits, and the share of rows whose top option is the most common
    top option (1.0 = every class gets the same answer, so the question tells nothing apart)."""
    out, start = [], 0
    for q, m in enumerate(options):
        block = matrix[:, start : start + m]
        start += m
        sums = block.sum(axis=1)
        probs = block / np.where(sums > 0, sums, 1.0)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nansum(np.where(probs > 0, probs * np.log2(probs), 0.0), axis=1)
        top = np.bincount(block.argmax(axis=1), minlength=m)
        out.append(
            {
                "number": q + 1,  # counted from 1, as the questions file
                "options": m,
                "mean_row_sum": float(sums.mean()),
                "mean_entropy_bits": float(entropy.mean()),
                "top_option_share": float(top.max() / len(block)),
            }
        )
    return out


def _shape_name(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return f"Q={shape[0]}"
    options = set(shape[1:])
    m = str(options.pop()) if len(options) == 1 else "ragged"
    return f"Q={shape[0]} x M={m}"


def _kind(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "unknown (no valid row)"
    if len(shape) == 1:
        return f"yes/no rows, Q = {shape[0]}"
    return f"multiple-choice blocks, Q = {shape[0]} questions x options {sorted(set(shape[1:]))}"


def _has_image_extension(key: str) -> bool:
    return any(key.lower().endswith(ext) for ext in IMAGE_EXTENSIONS)
