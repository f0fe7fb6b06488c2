"""Benchmark the strict JSON reader (makd.formats.strict_json) against plain json.loads on the files it guards.

Two files are generated in a temporary folder: an aspect file of --rows rows x --questions P(yes) values (the
large file every training run reads; one object, many lists) and a COCO-style instances file of --boxes
annotations (many small objects, where a per-object check would cost the most). For each file, rounds alternate
in one process, so load on a shared machine hits every variant alike:

- plain: json.loads, no check (a repeated key silently keeps the last value);
- loop hook: the aspect reader before this reader, an object_pairs_hook building each object in a Python loop;
- strict: makd.formats.strict_json.loads_json (dict(pairs) in C and a length check);
- read_aspect_file: the whole strict aspect read (file bytes, sha256, parse, validation, float32 array).

Figures are the best of --rounds rounds: wall seconds and CPU seconds of this process, and each variant's ratio to
plain. One thread; the machine's load shows in wall time more than in CPU time.

  python tools/bench_strict_parsing.py                  # 100,000 rows x 50, 100,000 boxes, 5 rounds
  python tools/bench_strict_parsing.py --rows 20000 --boxes 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from makd.formats.aspect_files import read_aspect_file, write_aspect_file  # noqa: E402
from makd.formats.strict_json import loads_json  # noqa: E402


class _Repeated(Exception):
    pass


def _loop_hook(pairs: list) -> dict:
    """The object_pairs_hook of the aspect reader before makd.formats.strict_json (a Python loop per object)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(key)
        out[key] = value
    return out


def _aspect_file(folder: Path, rows: int, questions: int) -> Path:
    rng = np.random.default_rng(0)
    values = rng.random((rows, questions)).round(6)
    path = folder / "aspects.json"
    write_aspect_file(path, {f"class_{i % 200:03d}/image_{i:07d}": values[i].tolist() for i in range(rows)})
    return path


def _instances_file(folder: Path, boxes: int) -> Path:
    rng = np.random.default_rng(1)
    images = [{"id": i, "file_name": f"{i:07d}.jpg", "width": 640, "height": 480} for i in range(max(1, boxes // 7))]
    annotations = [
        {"id": k, "image_id": int(rng.integers(len(images))), "category_id": int(rng.integers(1, 81)),
         "bbox": [float(x) for x in rng.random(4).round(2) * 100], "area": 1.0, "iscrowd": 0}  # fmt: skip
        for k in range(boxes)
    ]
    categories = [{"id": c, "name": f"category {c}", "supercategory": "thing"} for c in range(1, 81)]
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _time(call: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, variants: dict[str, Callable[[], object]], rounds: int) -> None:
    best = {label: (float("inf"), float("inf")) for label in variants}
    for _ in range(rounds):
        for label, call in variants.items():
            wall, cpu = _time(call)
            best[label] = (min(best[label][0], wall), min(best[label][1], cpu))
    plain_wall, plain_cpu = best["plain"]
    print(f"\n{name}")
    print(f"{'variant':<18} {'wall s':>8} {'CPU s':>8} {'wall / plain':>13} {'CPU / plain':>12}")
    for label, (wall, cpu) in best.items():
        print(f"{label:<18} {wall:8.3f} {cpu:8.3f} {wall / plain_wall:13.2f} {cpu / plain_cpu:12.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the aspect file")
    parser.add_argument("--questions", type=int, default=50, help="values per row (Q)")
    parser.add_argument("--boxes", type=int, default=100_000, help="annotations of the instances file")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (the best is reported)")
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        aspects = _aspect_file(folder, args.rows, args.questions)
        text = aspects.read_text(encoding="utf-8")
        bench(
            f"aspect file: {args.rows:,} rows x {args.questions} ({len(text) / 1e6:.1f} MB)",
            {
                "plain": lambda: json.loads(text),
                "loop hook": lambda: json.loads(text, object_pairs_hook=_loop_hook),
                "strict": lambda: loads_json(text, str(aspects)),
                "read_aspect_file": lambda: read_aspect_file(aspects),
            },
            args.rounds,
        )
        instances = _instances_file(folder, args.boxes)
        coco = instances.read_text(encoding="utf-8")
        bench(
            f"instances file: {args.boxes:,} annotations ({len(coco) / 1e6:.1f} MB)",
            {
                "plain": lambda: json.loads(coco),
                "loop hook": lambda: json.loads(coco, object_pairs_hook=_loop_hook),
                "strict": lambda: loads_json(coco, str(instances)),
            },
            args.rounds,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
