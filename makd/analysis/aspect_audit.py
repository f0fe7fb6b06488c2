"""`aspects audit`: how often the teacher's answers agree with ground-truth 0/1 attributes, per question.

Truth comes from a truth file `{image_id: [t_1..t_Q]}` with t in {0, 1} (the demo writes
truth_{train,test}.json), or from CUB-200-2011's `attributes/image_attribute_labels.txt` (lines
`<image_id> <attribute_id> <is_present> <certainty_id> <time>`, ids 1-based) with its `images.txt`
(`<image_id> <relative path>`, turned into this project's ids by the id rule) and a question map
(lines `<question number 1..Q> <attribute id 1..312>`: which CUB attribute each question asks about;
questions not listed are skipped). CUB answers with certainty 1 ("not visible") are left out by
default, since is_present = 0 there means "could not see", not "absent".

Per question: n, the truth's positive rate, the teacher's yes-rate, agreement (share of rows where
p > 0.5 equals the truth) and AUC of p against the truth, computed only when the truth holds at least
`min_count` positives and `min_count` negatives (makd.engine.metrics.MIN_AUC_COUNT, 10; the counts are listed):
questions below it have no AUC and are left out of the mean AUC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from makd.engine.metrics import MIN_AUC_COUNT, counted_auc
from makd.formats.aspect_files import AspectTable
from makd.formats.errors import ArtifactError
from makd.formats.files import read_json
from makd.formats.text_lists import read_text_list

NOT_VISIBLE = 1  # CUB certainty_id 1: "not visible"


@dataclass
class Truth:
    """Ground truth by image id: `values[id][q]` in {0, 1} or NaN (unknown); `questions[q]` names the source."""

    values: dict[str, np.ndarray]
    questions: list[str]
    source: str


def read_truth_file(path: str | os.PathLike) -> Truth:
    """A `{image_id: [0/1 ...]}` file (every row the same length; values 0 or 1)."""
    path = Path(path)
    rows = read_json(path, "--truth")  # strictly: an image id written twice is an error naming both lines
    if not isinstance(rows, dict) or not rows:
        raise ArtifactError(f"--truth {path}: expected a non-empty JSON object {{image_id: [0/1 ...]}}")
    width = None
    values = {}
    for key, row in rows.items():
        if not isinstance(row, list) or any(v not in (0, 1) or isinstance(v, bool) for v in row):
            raise ArtifactError(f"--truth {path}: row {key!r} is not a list of 0/1 values")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ArtifactError(f"--truth {path}: row {key!r} has {len(row)} values, the first row has {width}")
        values[key] = np.asarray(row, dtype=np.float64)
    return Truth(values, [f"truth column {q + 1}" for q in range(width)], str(path))


def read_question_map(path: str | os.PathLike) -> dict[int, int]:
    """{question number (1-based): CUB attribute id (1..312)} from `<question> <attribute>` lines."""
    mapping = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise ArtifactError(f"--question-map {path}:{number}: expected `<question number> <attribute id>`")
        question, attribute = int(fields[0]), int(fields[1])
        if question < 1 or not 1 <= attribute <= 312:
            raise ArtifactError(f"--question-map {path}:{number}: question >= 1 and attribute 1..312 expected")
        if question in mapping:
            raise ArtifactError(f"--question-map {path}:{number}: question {question} is mapped twice")
        mapping[question] = attribute
    if not mapping:
        raise ArtifactError(f"--question-map {path}: maps no question")
    return mapping


def read_cub_truth(
    labels_path: str | os.PathLike,
    images_path: str | os.PathLike,
    question_map: dict[int, int],
    num_questions: int,
    keep_not_visible: bool = False,
) -> Truth:
    """CUB-200-2011 attribute labels as a Truth over `num_questions` columns (unmapped columns NaN)."""
    bad = [q for q in question_map if q > num_questions]
    if bad:
        raise ArtifactError(f"--question-map names question {bad[0]} but the aspect file has {num_questions}")
    path_of: dict[int, str] = {}
    # An image number listed twice is refused (naming both lines): the second path would silently replace the first.
    listed = read_text_list(images_path, "--cub-images", entry="image number", same=lambda line: line.split()[0])
    for number, line in zip(listed.lines, listed.entries):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise ArtifactError(f"--cub-images {images_path}:{number}: expected `<image_id> <relative path>`")
        path_of[int(fields[0])] = Path(fields[1]).with_suffix("").as_posix()  # the id rule, relative to images/
    column_of = {attribute: question - 1 for question, attribute in question_map.items()}
    values: dict[str, np.ndarray] = {}
    with open(labels_path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            # The released file has a few lines with an extra field; the first four are always these.
            if len(fields) < 4 or not all(f.isdigit() for f in fields[:4]):
                raise ArtifactError(
                    f"--cub-attributes {labels_path}:{number}: expected "
                    "`<image_id> <attribute_id> <is_present> <certainty_id> <time>`"
                )
            image, attribute, present, certainty = (int(f) for f in fields[:4])
            column = column_of.get(attribute)
            if column is None:
                continue
            if image not in path_of:
                raise ArtifactError(f"--cub-attributes {labels_path}:{number}: image {image} is not in {images_path}")
            row = values.setdefault(path_of[image], np.full(num_questions, np.nan))
            if certainty != NOT_VISIBLE or keep_not_visible:
                row[column] = float(present)
    names = [
        f"CUB attribute {question_map[q + 1]}" if q + 1 in question_map else "(not mapped)"
        for q in range(num_questions)
    ]
    return Truth(values, names, str(labels_path))


def audit(table: AspectTable, truth: Truth, min_count: int = MIN_AUC_COUNT) -> dict[str, Any]:
    """Per-question agreement and AUC of `table`'s P(yes) against `truth`, joined on image id (see the module)."""
    index = table.index()
    shared = [i for i in truth.values if i in index]
    if not shared:
        example = next(iter(truth.values))
        raise ArtifactError(
            f"no image id of {truth.source} is in {table.path} (e.g. {example!r} vs {table.ids[0]!r}); "
            "convert the aspect file to this project's ids first (tools/aspects.py convert)"
        )
    width = len(next(iter(truth.values.values())))
    if width != table.num_aspects:
        raise ArtifactError(f"{truth.source} has {width} columns but {table.path} has {table.num_aspects} questions")
    p = table.values[[index[i] for i in shared]].astype(np.float64)  # [N, Q]
    t = np.stack([truth.values[i] for i in shared])  # [N, Q], NaN = unknown
    questions = []
    for q in range(width):
        known = ~np.isnan(t[:, q])
        n = int(known.sum())
        if n == 0:
            questions.append({"number": q + 1, "truth": truth.questions[q], "n": 0})
            continue
        scores, positives = p[known, q], t[known, q] > 0.5
        auc, n_pos, n_neg = counted_auc(scores, positives, min_count)
        questions.append(
            {
                "number": q + 1,
                "truth": truth.questions[q],
                "n": n,
                "truth_positives": n_pos,
                "truth_negatives": n_neg,
                "truth_rate": float(positives.mean()),
                "teacher_yes_rate": float((scores > 0.5).mean()),
                "agreement": float(((scores > 0.5) == positives).mean()),
                "auc": auc,
            }
        )
    scored = [q for q in questions if q["n"]]
    aucs = [q["auc"] for q in scored if not np.isnan(q["auc"])]
    return {
        "aspect_file": table.path,
        "truth": truth.source,
        "images_joined": len(shared),
        "images_in_truth": len(truth.values),
        "images_in_aspect_file": len(table.ids),
        "questions_scored": len(scored),
        "mean_agreement": float(np.mean([q["agreement"] for q in scored])) if scored else float("nan"),
        "mean_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "auc_min_count": int(min_count),
        "questions_with_auc": len(aucs),
        "questions": questions,
    }


def audit_lines(result: dict[str, Any]) -> list[str]:
    out = [
        f"{result['aspect_file']} vs {result['truth']}: {result['images_joined']} images joined "
        f"({result['images_in_truth']} in the truth, {result['images_in_aspect_file']} in the aspect file)",
        f"{result['questions_scored']} questions scored; mean agreement {result['mean_agreement']:.4f}, "
        f"mean AUC {result['mean_auc']:.4f} over the {result['questions_with_auc']} questions with at least "
        f"{result['auc_min_count']} true and {result['auc_min_count']} false answers",
        "question  n  true/false  truth_rate  teacher_yes  agreement  auc  truth",
    ]
    for q in result["questions"]:
        if not q["n"]:
            out.append(f"{q['number']:>8}  0  -  -  -  -  -  {q['truth']}")
            continue
        auc = f"{q['auc']:.3f}" if not np.isnan(q["auc"]) else f"- (< {result['auc_min_count']} a side)"
        out.append(
            f"{q['number']:>8}  {q['n']}  {q['truth_positives']}/{q['truth_negatives']}  {q['truth_rate']:.3f}  "
            f"{q['teacher_yes_rate']:.3f}  {q['agreement']:.3f}  {auc}  {q['truth']}"
        )
    return out
