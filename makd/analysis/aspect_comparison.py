"""Two aspect files of the same images and questions, side by side: how far apart are their P(yes)?

For cross-checking teachers that should agree: stage 2 in process against the same model behind a server
(`--backend openai`), bf16 against fp32, two revisions of a checkpoint. Per question (numbered from 1, as the
questions file's lines) and over all: rows in common, max and mean |dP|, Pearson correlation, and how often both
put P(yes) on the same side of 0.5.
"""

from __future__ import annotations

import numpy as np

from makd.formats.aspect_files import AspectTable
from makd.formats.errors import ArtifactError


def compare_tables(first: AspectTable, second: AspectTable) -> dict:
    """The comparison of two tables over the ids they share (their Q must be equal)."""
    if first.num_aspects != second.num_aspects:
        raise ArtifactError(
            f"{first.path} has {first.num_aspects} questions per row and {second.path} {second.num_aspects}; "
            "compare files of the same questions file"
        )
    index = second.index()
    common = [image_id for image_id in first.ids if image_id in index]
    if not common:
        raise ArtifactError(f"{first.path} and {second.path} share no row id; compare files of the same images")
    a = first.values[[first.index()[i] for i in common]].astype(np.float64)
    b = second.values[[index[i] for i in common]].astype(np.float64)

    def summary(x: np.ndarray, y: np.ndarray) -> dict:
        difference = np.abs(x - y)
        spread = x.std() > 0 and y.std() > 0
        return {
            "rows": int(x.size),
            "max_abs_difference": float(difference.max()),
            "mean_abs_difference": float(difference.mean()),
            "correlation": float(np.corrcoef(x, y)[0, 1]) if spread else None,
            "same_side_of_half": float(np.mean((x > 0.5) == (y > 0.5))),
        }

    return {
        "first": first.path,
        "second": second.path,
        "common_rows": len(common),
        "only_in_first": len(first.ids) - len(common),
        "only_in_second": len(second.ids) - len(common),
        "overall": summary(a.ravel(), b.ravel()),
        "questions": [{"number": q + 1, **summary(a[:, q], b[:, q])} for q in range(first.num_aspects)],
    }


def compare_lines(result: dict) -> list[str]:
    """The comparison as a short table (questions numbered from 1)."""

    def cells(s: dict) -> str:
        r = "-" if s["correlation"] is None else f"{s['correlation']:.3f}"
        return (f"{s['max_abs_difference']:.2e}  {s['mean_abs_difference']:.2e}  {r:>6}  "
                f"{100 * s['same_side_of_half']:5.1f} %")  # fmt: skip

    lines = [
        f"{result['common_rows']} rows in both ({result['only_in_first']} only in {result['first']}, "
        f"{result['only_in_second']} only in {result['second']})",
        "question  max|dP|   mean|dP|  r       same side of 0.5",
        f"all       {cells(result['overall'])}",
    ]
    lines += [f"{q['number']:<9} {cells(q)}" for q in result["questions"]]
    return lines
