"""Per-class accuracy and the confusion matrix: by hand on a prediction set chosen image by image, over a real
2-process gloo group, and through tools/eval.py on a trained run (CSV, figure, printed table, JSON)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from tool_modules import load_tool
from torch.utils.data import Dataset

from makd.analysis.class_accuracy import confusion_csv, per_class, table_lines, top_confusions
from makd.engine.distributed import DistInfo
from makd.engine.evaluate import evaluate, make_eval_loader

NAMES = ["ant", "bee", "cat"]
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDICTED = [0, 1, 0, 1, 1, 2, 0, 2, 1]
# row = true class, column = predicted: ant 2 right + 1 as bee; bee 2 right; cat 2 right, 1 as ant, 1 as bee
EXPECTED = [[2, 1, 0], [0, 2, 0], [1, 1, 2]]


class ChosenPredictions(Dataset):
    """Image i is a one-hot vector of the class the 'student' (an identity) predicts for it."""

    def __len__(self) -> int:
        return len(LABELS)

    def __getitem__(self, i: int) -> dict:
        logits = torch.full((3,), -1.0)
        logits[PREDICTED[i]] = 1.0
        return {"image": logits, "label": LABELS[i], "aspects": torch.zeros(0)}


def test_the_confusion_matrix_and_per_class_accuracy_of_a_hand_made_prediction_set():
    loader = make_eval_loader(ChosenPredictions(), 4, 0, DistInfo(), False)  # 3 batches, the last one short
    result = evaluate(torch.nn.Identity(), loader, 3, torch.device("cpu"), confusion=True)
    assert result["confusion"].tolist() == EXPECTED and result["confusion"].dtype == np.int64
    assert result["top1"] == pytest.approx(100 * 6 / 9)  # the diagonal
    rows = per_class(result["confusion"], NAMES)
    assert [(r.name, r.images, r.correct) for r in rows] == [("ant", 3, 2), ("bee", 2, 2), ("cat", 4, 2)]
    assert [r.top1 for r in rows] == pytest.approx([200 / 3, 100.0, 50.0])
    assert [(r.confused_with, r.confused_count) for r in rows] == [("bee", 1), ("", 0), ("ant", 1)]
    assert top_confusions(result["confusion"], NAMES) == [
        ("ant", "bee", 1, pytest.approx(1 / 3)), ("cat", "ant", 1, 0.25), ("cat", "bee", 1, 0.25)]  # fmt: skip
    lines = table_lines(result["confusion"], NAMES)
    assert [line.split()[0] for line in lines[1:4]] == ["cat", "ant", "bee"]  # worst first
    assert lines[1].split()[1:4] == ["4", "2", "50.00"] and lines[-1].startswith("most frequent mistakes: ant -> bee")
    table = list(csv.reader(confusion_csv(result["confusion"], NAMES).splitlines()))
    assert table[0] == ["true \\ predicted", *NAMES] and [[int(v) for v in row[1:]] for row in table[1:]] == EXPECTED
    # a class with no image in the split has no accuracy rather than 0
    empty = per_class(np.array([[1, 0], [0, 0]]), ["a", "b"])
    assert np.isnan(empty[1].top1) and empty[1].images == 0


def _rank(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    info = DistInfo(rank=rank, world_size=world, group=True)
    loader = make_eval_loader(ChosenPredictions(), 2, 0, info, False)  # rank 0: images 0-4, rank 1: 5-8
    result = evaluate(torch.nn.Identity(), loader, 3, torch.device("cpu"), info, confusion=True)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"confusion": result["confusion"].tolist(),
                                                         "top1": result["top1"]}))  # fmt: skip
    torch.distributed.destroy_process_group()


def test_two_processes_sum_their_shares_of_the_matrix(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["confusion"] == EXPECTED and result["top1"] == pytest.approx(100 * 6 / 9)


def test_eval_prints_per_class_accuracy_and_writes_the_matrix(release_dataset, capsys):
    out = release_dataset["root"] / "run"
    fast = ["DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "SOLVER.EPOCHS", "1"]
    assert load_tool("our_train").main([str(release_dataset["config"]), *fast, "OUTPUT_DIR", str(out)]) == 0
    capsys.readouterr()
    evaluate_tool = load_tool("eval")
    assert evaluate_tool.main([str(release_dataset["config"]), str(out / "student.pth"), *fast]) == 0
    printed = capsys.readouterr().out
    folder = release_dataset["root"] / "run_eval"  # beside the run folder, never in it
    assert sorted(p.name for p in folder.iterdir()) == [
        "student_test_confusion.csv", "student_test_confusion.png", "student_test_per_class.csv"]  # fmt: skip
    with Image.open(folder / "student_test_confusion.png") as image:
        assert image.format == "PNG" and min(image.size) > 200
    rows = list(csv.DictReader((folder / "student_test_per_class.csv").open()))
    assert [r["class"] for r in rows] == release_dataset["classes"] and all(r["images"] == "4" for r in rows)
    matrix = [[int(v) for v in row[1:]] for row in list(csv.reader((folder / "student_test_confusion.csv").open()))[1:]]
    assert [sum(row) for row in matrix] == [4, 4, 4] and [int(r["correct"]) for r in rows] == [matrix[c][c] for c in
                                                                                                range(3)]  # fmt: skip
    top1 = 100 * sum(matrix[c][c] for c in range(3)) / 12
    assert f"on test: top-1 {top1:.2f} %" in printed and "most often taken for" in printed
    assert all(name in printed for name in release_dataset["classes"])
    # --json: the same numbers, the matrix and the per-class entries included; --out elsewhere
    assert evaluate_tool.main([str(release_dataset["config"]), str(out / "student.pth"), "--json", "--out",
                               str(release_dataset["root"] / "elsewhere"), *fast]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["confusion"] == matrix and result["top1"] == pytest.approx(top1)
    assert [e["correct"] for e in result["per_class"]] == [matrix[c][c] for c in range(3)]
    assert (release_dataset["root"] / "elsewhere" / "student_test_confusion.csv").exists()


def test_eval_output_places_and_a_bad_out_is_one_line(release_dataset, capsys):
    out = release_dataset["root"] / "run"
    fast = ["DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "SOLVER.EPOCHS", "1"]
    assert load_tool("our_train").main([str(release_dataset["config"]), *fast, "OUTPUT_DIR", str(out)]) == 0
    loose = release_dataset["root"] / "kept" / "best_student.pth"  # a checkpoint outside any run folder
    loose.parent.mkdir()
    loose.write_bytes((out / "student.pth").read_bytes())
    evaluate_tool = load_tool("eval")
    assert evaluate_tool.main([str(release_dataset["config"]), str(loose), "--split", "train", *fast]) == 0
    assert (loose.parent / "best_student_train_confusion.csv").exists()  # beside it
    blocker = release_dataset["root"] / "a_file"
    blocker.write_text("x")
    capsys.readouterr()
    args = [str(release_dataset["config"]), str(loose), "--out", str(blocker / "eval"), *fast]
    assert evaluate_tool.main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {blocker / 'eval'} cannot be written")
