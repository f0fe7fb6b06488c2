"""Does stage 2 reproduce the paper's teachers exactly under the installed transformers? A table that says.

    python tools/check_real_teacher.py --internvl-repo MIRROR [--families all] [--out DIR] [--device cpu]

MIRROR is a git clone (or bare mirror) of github.com/OpenGVLab/InternVL. For each family (InternVL2.5-8B's InternLM2,
InternVL2.5-1B's Qwen2, the InternVL2 templates, the InternVL2.5 release's code) a tiny checkpoint with the real
tile geometry is assembled from the repository's files (makd.demo.internvl_remote_code: import lines edited, nothing
else), loaded by the stage-2 loader, scored by the stage-2 scorer, and compared with the real code's own `chat`
prompt and forward on a model built as transformers 4 built it. Printed per family: what the loader had to do
(compat), whether every prompt equals chat's, and max |dP| at 1 and 12 tiles in packed and expanded mode, float32
and bfloat16 (against the bf16 and the fp32 real forward). Random tiny weights: the numbers only measure exactness.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from makd.demo.internvl_remote_code import (  # noqa: E402
    FAMILIES,
    RemoteCheckpointSpec,
    assemble_checkpoint,
    compare_with_reference,
    flatten_remote_code,
    reference_model,
)
from makd.demo.tiny_internvl import SAMPLE_QUESTIONS as QUESTIONS  # noqa: E402
from makd.errors import MakdError, run_command  # noqa: E402


def test_image():
    """A 500x375 noise image: 13 tiles at --max-tiles 12 (4x3 + thumbnail), 1 tile at 1."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(5).integers(0, 256, size=(375, 500, 3), dtype=np.uint8))


def check_family(name: str, git_dir: Path, work: Path, device: str) -> dict:
    from makd.mllm.model_loading import load_internvl

    commit, language_model, template = FAMILIES[name]
    code = work / f"code_{commit}"
    if not code.exists():
        flatten_remote_code(git_dir, commit, code)
    spec = RemoteCheckpointSpec(language_model=language_model, template=template)
    folder = assemble_checkpoint(code, work / name, spec)
    row: dict = {"family": name, "commit": commit, "language_model": language_model, "template": template}
    image = test_image()
    started = time.perf_counter()
    for dtype, torch_dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        parts = load_internvl(str(folder), device=device, dtype=dtype)
        row.setdefault("compat", parts.info["compat"])
        references = {"float32": reference_model(folder, torch.float32)}
        if dtype == "bfloat16":
            references["bfloat16"] = reference_model(folder, torch_dtype)
        for tiles in (1, 12):
            for mode in ("packed", "expanded"):
                for against, reference in references.items():
                    result = compare_with_reference(parts, reference, image, QUESTIONS, tiles, mode)
                    key = f"{dtype}_vs_{against}_{result.n_tiles}tiles_{mode}"
                    row[key] = result.max_abs_difference
                    row["prompts_equal"] = row.get("prompts_equal", True) and result.prompts_equal
                    row.setdefault("fell_back", []).extend([key] if result.prefix_mode != mode else [])
        row["compat"] = sorted(set(row["compat"]) | set(parts.info["compat"]))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def markdown(rows: list[dict]) -> str:
    head = ["family", "LM", "template", "compat", "prompts = chat"]
    cases = [(d, a, t, m) for d, a in (("float32", "float32"), ("bfloat16", "bfloat16"), ("bfloat16", "float32"))
             for t in (1, 13) for m in ("packed", "expanded")]  # fmt: skip
    short = {"float32": "fp32", "bfloat16": "bf16"}
    labels = [f"{short[d]} vs {short[a]}, {t} tile{'s' * (t > 1)}, {m}" for d, a, t, m in cases]
    lines = ["| " + " | ".join(head + labels) + " |", "|" + "---|" * (len(head) + len(labels))]
    for row in rows:
        cells = [row["family"], row["language_model"], row["template"], ", ".join(row["compat"]) or "-",
                 "yes" if row["prompts_equal"] else "NO"]  # fmt: skip
        cells += [f"{row[f'{d}_vs_{a}_{t}tiles_{m}']:.1e}" for d, a, t, m in cases]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--internvl-repo", required=True, help="git clone or mirror of OpenGVLab/InternVL")
    parser.add_argument("--families", default="all", help=f"comma list of {', '.join(FAMILIES)} (default all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="folder for real_teacher.json and real_teacher.md")

    def body(args_list):
        args = parser.parse_args(args_list)
        git_dir = Path(args.internvl_repo)
        if not git_dir.exists():
            raise MakdError(f"--internvl-repo {git_dir}: no such folder (a git clone of OpenGVLab/InternVL)")
        names = list(FAMILIES) if args.families == "all" else args.families.split(",")
        unknown = [n for n in names if n not in FAMILIES]
        if unknown:
            raise MakdError(f"--families: unknown {', '.join(unknown)} (use {', '.join(FAMILIES)})")
        with tempfile.TemporaryDirectory() as work:
            rows = []
            for name in names:
                rows.append(check_family(name, git_dir, Path(work), args.device))
                print(f"[check_real_teacher] {name}: done in {rows[-1]['seconds']} s", file=sys.stderr)
        table = markdown(rows)
        print(table)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "real_teacher.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
            (out / "real_teacher.md").write_text(table + "\n", encoding="utf-8")
        return 0 if all(r["prompts_equal"] and not r["fell_back"] for r in rows) else 1

    return run_command(body, argv)


if __name__ == "__main__":
    sys.exit(main())
